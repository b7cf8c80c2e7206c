// Fuzzes tokenizer loading and use together. The input is tokenizer.json, a NUL byte,
// tokenizer_config.json (may be empty), a NUL byte, then text: any bytes are a load error, or a
// tokenizer that encodes the text, decodes the ids to valid UTF-8 and renders its chat template
// (when it has one) or fails with a status.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/utf8.h"

namespace {

// The part of `rest` before the first NUL; `rest` keeps what follows it (empty when none).
std::string_view TakePart(std::string_view& rest) {
  const size_t nul = rest.find('\0');
  const std::string_view part = rest.substr(0, nul);
  rest = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
  return part;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  const std::string_view tokenizer_json = TakePart(rest);
  const std::string_view config_json = TakePart(rest);
  const std::string_view text = rest;
  auto tokenizer = loraserve::Tokenizer::FromJson(tokenizer_json, config_json);
  if (!tokenizer.ok()) return 0;
  const loraserve::Tokenizer& t = **tokenizer;
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = t.Encode(text, special);
    if (!loraserve::tokenizer::IsValidUtf8(t.Decode(ids, special))) __builtin_trap();
  }
  auto rendered = t.ApplyChatTemplate({{"system", "be brief"}, {"user", std::string(text)}},
                                      /*add_generation_prompt=*/true);
  if (rendered.ok()) (void)t.Encode(*rendered, /*add_special_tokens=*/false);
  return 0;
}
