// Streaming detokenization: feed generated ids one at a time, get back only text that is
// complete UTF-8 and will not change when later ids arrive.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace loraserve {

// Decodes a sliding window of ids twice (with and without the newest ids) and emits the
// difference, so decoders that look at neighbouring tokens (Strip, Metaspace, byte fallback)
// behave as in a full decode. Not thread-safe; one per generation stream. `tokenizer` must
// outlive it.
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // Returns the newly completed text; empty while the decoded window ends in U+FFFD (a partial
  // character, or bytes that are invalid for good: those go out with the next complete text
  // or with Flush).
  std::string Push(int32_t id);
  // Returns text still held back (incomplete bytes become U+FFFD) and resets the stream.
  std::string Flush();

 private:
  // The text the ids from read_offset_ on add, then those ids become the context; "" (and no
  // change) while that text is empty or, unless `final`, ends in U+FFFD.
  std::string Advance(bool final);

  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;  // window: ids_[0, read_offset_) were already emitted
  size_t prefix_offset_ = 0;  // start of the context decoded in front of the new ids
  size_t read_offset_ = 0;
};

}  // namespace loraserve
