// A compiled PCRE2 (UTF + UCP, JIT) pattern standing in for the Oniguruma regexes in
// tokenizer.json. Thread-safe: each search allocates its own match data.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace loraserve::tokenizer {

class Regex {
 public:
  // Compiles `pattern`; \s and \S are rewritten to Oniguruma's (Unicode White_Space) meaning.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls `on_match(start, end)` for every non-overlapping match in `text` (valid UTF-8), left
  // to right. Empty matches are reported too.
  void ForEachMatch(std::string_view text,
                    const std::function<void(size_t, size_t)>& on_match) const;

 private:
  explicit Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8*
};

}  // namespace loraserve::tokenizer
