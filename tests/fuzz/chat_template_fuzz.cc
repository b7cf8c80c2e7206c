// Fuzzes chat templates (the Jinja subset) the way requests reach them: through
// Tokenizer::ApplyChatTemplate, with the tokenizer's special tokens in the context. Byte 0
// picks the mode: 0 renders a template taken from the input (up to the first NUL) with the
// SmolLM2 tokenizer; 1-4 render the real templates of data/tokenizers/ (llama2, llama3, qwen3,
// smollm2) with arbitrary messages. Its top bit is add_generation_prompt. The messages follow,
// separated by 0x1E: each starts with a role byte (one of five roles, or 5 mod 6: the role is
// the text up to the first newline) and the rest is the content.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace {

const std::vector<std::unique_ptr<loraserve::Tokenizer>>& Tokenizers() {
  static const std::vector<std::unique_ptr<loraserve::Tokenizer>> all = [] {
    std::vector<std::unique_ptr<loraserve::Tokenizer>> out;
    for (const char* name : {"llama2", "llama3", "qwen3", "smollm2"}) {
      auto t = loraserve::Tokenizer::FromFile(std::string(LORASERVE_FUZZ_DATA_DIR) +
                                              "/tokenizers/" + name);
      if (!t.ok()) __builtin_trap();  // the fixed data must load
      out.push_back(*std::move(t));
    }
    return out;
  }();
  return all;
}

std::vector<loraserve::ChatMessage> Messages(std::string_view rest) {
  static const char* const kRoles[] = {"system", "user", "assistant", "tool", "developer"};
  std::vector<loraserve::ChatMessage> messages;
  while (!rest.empty()) {
    const size_t end = rest.find('\x1e');
    std::string_view item = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    if (item.empty()) continue;
    const int role = static_cast<uint8_t>(item[0]) % 6;
    item.remove_prefix(1);
    loraserve::ChatMessage message;
    if (role < 5) {
      message.role = kRoles[role];
    } else {
      const size_t newline = item.find('\n');
      message.role = std::string(item.substr(0, newline));
      item = newline == std::string_view::npos ? std::string_view() : item.substr(newline + 1);
    }
    message.content = std::string(item);
    messages.push_back(std::move(message));
  }
  return messages;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& tokenizers = Tokenizers();
  const int mode = (data[0] & 0x7f) % 5;
  const bool add_generation_prompt = data[0] & 0x80;
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string_view source;
  if (mode == 0) {
    const size_t nul = rest.find('\0');
    source = rest.substr(0, nul);
    rest = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
    if (source.empty()) return 0;  // an empty override means the tokenizer's own template
  }
  const loraserve::Tokenizer& t = *tokenizers[mode == 0 ? 3 : mode - 1];
  (void)t.ApplyChatTemplate(Messages(rest), add_generation_prompt, source);
  return 0;
}
