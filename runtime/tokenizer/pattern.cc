// Literal patterns are searched with string_view::find; regex ones go through PCRE2.
#include "runtime/tokenizer/pattern.h"

#include "absl/strings/str_cat.h"

namespace loraserve::tokenizer {

absl::StatusOr<Pattern> Pattern::FromJson(const nlohmann::json& config) {
  if (config.is_object() && config.contains("String")) {
    return Literal(config["String"].get<std::string>());
  }
  if (config.is_object() && config.contains("Regex")) {
    absl::StatusOr<std::unique_ptr<Regex>> regex =
        Regex::Compile(config["Regex"].get<std::string>());
    if (!regex.ok()) return regex.status();
    return Pattern("", std::shared_ptr<const Regex>(*std::move(regex)));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: pattern must be {\"String\": ...} or {\"Regex\": ...}, got ",
                   config.dump()));
}

std::vector<std::pair<size_t, size_t>> Pattern::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  if (regex_) {
    regex_->ForEachMatch(text, [&](size_t start, size_t end) { matches.emplace_back(start, end); });
    return matches;
  }
  if (literal_.empty()) return matches;
  for (size_t pos = text.find(literal_); pos != std::string_view::npos;
       pos = text.find(literal_, pos + literal_.size())) {
    matches.emplace_back(pos, pos + literal_.size());
  }
  return matches;
}

std::string Pattern::ReplaceAll(std::string_view text, std::string_view replacement) const {
  std::string out;
  out.reserve(text.size());
  size_t last = 0;
  for (const auto& [start, end] : FindAll(text)) {
    out.append(text.substr(last, start - last));
    out.append(replacement);
    last = end;
  }
  out.append(text.substr(last));
  return out;
}

}  // namespace loraserve::tokenizer
