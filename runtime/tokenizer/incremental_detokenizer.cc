// The prefix/read offset scheme used by text-generation-inference and vLLM.
#include "runtime/tokenizer/incremental_detokenizer.h"

#include <span>

namespace loraserve {
namespace {

bool EndsWithReplacement(const std::string& text) {
  return text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

}  // namespace

std::string IncrementalDetokenizer::Push(int32_t id) {
  ids_.push_back(id);
  return Advance(/*final=*/false);
}

std::string IncrementalDetokenizer::Flush() {
  std::string rest = Advance(/*final=*/true);
  ids_.clear();
  prefix_offset_ = read_offset_ = 0;
  return rest;
}

std::string IncrementalDetokenizer::Advance(bool final) {
  const std::span<const int32_t> all(ids_);
  const std::string prefix_text = tokenizer_.Decode(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  const std::string new_text =
      tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  std::string delta;
  if (new_text.compare(0, prefix_text.size(), prefix_text) == 0) {
    if (new_text.size() > prefix_text.size()) delta = new_text.substr(prefix_text.size());
  } else {
    // The new ids changed how the context decodes (byte-fallback bytes that were a character
    // alone are part of an invalid sequence now, each a U+FFFD). The context is out already, so
    // the new ids go out decoded on their own: cutting new_text at prefix_text.size() would
    // split a character, and waiting would hold every later token back.
    delta = tokenizer_.Decode(all.subspan(read_offset_), skip_special_tokens_);
  }
  if (delta.empty() || (!final && EndsWithReplacement(delta))) return "";
  // Keep only the ids the next decode needs as context.
  ids_.erase(ids_.begin(), ids_.begin() + read_offset_);
  prefix_offset_ = 0;
  read_offset_ = ids_.size();
  return delta;
}

}  // namespace loraserve
