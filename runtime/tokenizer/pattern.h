// The {"String": ...} / {"Regex": ...} pattern object that Split pre-tokenizers and Replace
// normalizers/decoders share.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/regex.h"

namespace loraserve::tokenizer {

class Pattern {
 public:
  static absl::StatusOr<Pattern> FromJson(const nlohmann::json& config);
  static Pattern Literal(std::string text) { return Pattern(std::move(text), nullptr); }

  // Non-overlapping matches as [start, end) byte ranges, left to right.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;
  std::string ReplaceAll(std::string_view text, std::string_view replacement) const;

 private:
  Pattern(std::string literal, std::shared_ptr<const Regex> regex)
      : literal_(std::move(literal)), regex_(std::move(regex)) {}

  std::string literal_;                // used when regex_ is null
  std::shared_ptr<const Regex> regex_;  // shared: patterns are immutable once compiled
};

}  // namespace loraserve::tokenizer
