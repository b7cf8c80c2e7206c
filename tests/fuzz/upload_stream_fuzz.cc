// Fuzzes the UploadAdapter stream (server/upload_assembler.h) with arbitrary message sequences,
// checked against a model of the protocol, then parses a completed upload the way the server
// does (adapter_config.json + adapter_model.safetensors against a small Llama base).
//
// The input is a list of records, each starting with an op byte (mod 4):
//   0 header: format byte (0 = PEFT), total_bytes (u32 LE), id length byte + id, sha length + sha
//   1 chunk:  name byte (0-2: the PEFT file names, 3: a length byte + name follows), offset byte
//             (0 = the expected offset, else a u32 LE offset follows), length (u16 LE) + data
//   2 a message with neither   3 the client half-closes (later bytes are ignored)
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "adapters/lora_adapter.h"
#include "formats/model_config.h"
#include "formats/safetensors.h"
#include "server/upload_assembler.h"

namespace {

using loraserve::server::UploadAssembler;

constexpr uint64_t kMaxBytes = 1 << 20;

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint64_t Int(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t{Byte()} << (8 * i);
    return v;
  }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::string_view Bytes(size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    std::string_view out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

const loraserve::ModelConfig& Base() {
  static const loraserve::ModelConfig base = [] {
    auto c = loraserve::ModelConfig::FromJson(
        R"({"model_type": "llama", "vocab_size": 64, "hidden_size": 16,
            "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2})",
        "base");
    if (!c.ok()) __builtin_trap();
    return *c;
  }();
  return base;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* const kNames[] = {"adapter_config.json", "adapter_model.safetensors",
                                       "README.md"};
  Reader in(data, size);
  UploadAssembler upload(kMaxBytes);
  // The protocol's model: what the assembler must hold after each accepted message.
  std::map<std::string, std::string> expected;
  uint64_t received = 0;
  bool have_header = false;
  bool failed = false;
  while (!in.empty()) {
    const int op = in.Byte() % 4;
    if (op == 3) break;
    absl::Status status;
    bool may_succeed = false;
    if (op == 0) {
      loraserve::server::UploadHeaderFields header;
      header.peft_format = in.Byte() == 0;
      header.total_bytes = in.Int(4);
      header.adapter_id = std::string(in.Bytes(in.Byte()));
      header.sha256 = std::string(in.Bytes(in.Byte()));
      status = upload.AddHeader(header);
      may_succeed = !have_header && header.peft_format && header.total_bytes <= kMaxBytes;
      have_header = true;
    } else if (op == 1) {
      const int name_byte = in.Byte() % 4;
      const std::string name(name_byte < 3 ? kNames[name_byte] : in.Bytes(in.Byte()));
      const bool expected_offset = in.Byte() == 0;
      const uint64_t offset = expected_offset ? expected[name].size() : in.Int(4);
      const std::string_view chunk = in.Bytes(in.Int(2));
      status = upload.AddChunk(name, offset, chunk);
      may_succeed = have_header && !name.empty() && offset == expected[name].size() &&
                    received + chunk.size() <= kMaxBytes;
      if (status.ok()) {
        expected[name].append(chunk);
        received += chunk.size();
      }
    } else {
      status = upload.AddEmpty();
    }
    if (status.ok() && (failed || !may_succeed)) __builtin_trap();  // accepted a bad message
    if (!status.ok() && !failed && may_succeed && op == 1) __builtin_trap();  // refused a good one
    failed = failed || !status.ok();
  }
  // Only accepted chunks count (names of refused ones may appear, empty).
  for (auto& [name, bytes] : upload.files()) {
    auto it = expected.find(name);
    if (!bytes.empty() && (it == expected.end() || it->second != bytes)) __builtin_trap();
  }
  if (upload.received_bytes() != received || received > kMaxBytes) __builtin_trap();
  if (!upload.Finish().ok()) return 0;
  if (failed || !have_header) __builtin_trap();

  // What the server does next (AdapterManager::Upload -> AdapterStore -> ParsePeftAdapter),
  // without the disk.
  const auto config = upload.files().find(loraserve::kAdapterConfigFile);
  const auto weights = upload.files().find(loraserve::kAdapterWeightsFile);
  if (config == upload.files().end() || weights == upload.files().end()) return 0;
  auto file = loraserve::SafetensorsFile::FromBuffer(weights->second, "upload");
  if (!file.ok()) return 0;
  (void)loraserve::ParsePeftAdapter(upload.header()->adapter_id, config->second, **file, Base(),
                                    loraserve::AdapterLimits{});
  return 0;
}
