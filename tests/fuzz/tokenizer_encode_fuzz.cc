// Fuzzes encoding and decoding with fixed real tokenizers (data/tokenizers/: Llama 2's
// SentencePiece-style BPE with byte fallback, the byte-level BPEs of Llama 3, Qwen3 and
// SmolLM2, with their vocabularies cut down; see data/README.md). Byte 0 picks the tokenizer
// and the flags; the rest is the text, and also read as token ids to decode. Checks: decoding
// gives valid UTF-8, and Llama 3 (byte-level, every byte in its vocabulary, no normalizer)
// gives the text back. SmolLM2 lacks 21 byte tokens, so it maps those bytes to 'unk'.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/incremental_detokenizer.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/utf8.h"

namespace {

struct Fixed {
  std::unique_ptr<loraserve::Tokenizer> tokenizer;
  bool lossless;  // byte-level, no normalizer: Decode(Encode(text)) == text
};

const std::vector<Fixed>& Tokenizers() {
  static const std::vector<Fixed> all = [] {
    std::vector<Fixed> out;
    for (auto [name, lossless] : {std::pair{"llama2", false}, std::pair{"llama3", true},
                                  std::pair{"qwen3", false}, std::pair{"smollm2", false}}) {
      auto t = loraserve::Tokenizer::FromFile(std::string(LORASERVE_FUZZ_DATA_DIR) +
                                              "/tokenizers/" + name);
      if (!t.ok()) __builtin_trap();  // the fixed data must load
      out.push_back({*std::move(t), lossless});
    }
    return out;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::vector<Fixed>& all = Tokenizers();
  const Fixed& fixed = all[data[0] % all.size()];
  const loraserve::Tokenizer& t = *fixed.tokenizer;
  const bool add_special = data[0] & 0x10;
  const bool skip_special = data[0] & 0x20;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  const std::vector<int32_t> ids = t.Encode(text, add_special);
  for (int32_t id : ids) {
    if (id < 0 || id >= t.vocab_size()) __builtin_trap();
  }
  const std::string decoded = t.Decode(ids, skip_special);
  if (!loraserve::tokenizer::IsValidUtf8(decoded)) __builtin_trap();
  if (fixed.lossless && !add_special && !skip_special &&
      decoded != loraserve::tokenizer::Utf8Lossy(text)) {
    __builtin_trap();
  }

  // The text's bytes as ids (a few out of range) through Decode and the streaming decoder.
  std::vector<int32_t> raw;
  for (size_t i = 0; i + 1 < text.size(); i += 2) {
    const int v = static_cast<uint8_t>(text[i]) | static_cast<uint8_t>(text[i + 1]) << 8;
    raw.push_back(v % (t.vocab_size() + 8) - 4);
  }
  if (!loraserve::tokenizer::IsValidUtf8(t.Decode(raw, skip_special))) __builtin_trap();
  loraserve::IncrementalDetokenizer stream(t, skip_special);
  std::string streamed;
  for (int32_t id : raw) streamed += stream.Push(id);
  streamed += stream.Flush();
  if (!loraserve::tokenizer::IsValidUtf8(streamed)) __builtin_trap();
  return 0;
}
