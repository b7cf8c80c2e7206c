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
  const std::span<const int32_t> all(ids_);
  const std::string prefix_text = tokenizer_.Decode(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  const std::string new_text =
      tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  if (new_text.size() <= prefix_text.size() || EndsWithReplacement(new_text) ||
      new_text.compare(0, prefix_text.size(), prefix_text) != 0) {
    return "";
  }
  std::string delta = new_text.substr(prefix_text.size());
  // Keep only the ids the next decode needs as context.
  ids_.erase(ids_.begin(), ids_.begin() + read_offset_);
  prefix_offset_ = 0;
  read_offset_ = ids_.size();
  return delta;
}

std::string IncrementalDetokenizer::Flush() {
  const std::span<const int32_t> all(ids_);
  const std::string prefix_text = tokenizer_.Decode(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  const std::string new_text =
      tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  ids_.clear();
  prefix_offset_ = read_offset_ = 0;
  if (new_text.size() <= prefix_text.size()) return "";
  return new_text.substr(prefix_text.size());
}

}  // namespace loraserve
