// Pre-tokenizer implementations. Splitting follows the reference's SplitDelimiterBehavior: the
// text is cut into alternating match / non-match spans, then spans are kept, dropped or glued
// to a neighbour.
#include "runtime/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/pattern.h"
#include "runtime/tokenizer/regex.h"

namespace loraserve::tokenizer {
namespace {

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Span {
  size_t start, end;
  bool is_match;
};

// Cuts `text` along `matches` and applies `behavior`, appending non-empty pieces to `out`.
void SplitAlong(std::string_view text, const std::vector<std::pair<size_t, size_t>>& matches,
                SplitBehavior behavior, bool invert, std::vector<std::string>* out) {
  std::vector<Span> spans;
  spans.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const auto& [start, end] : matches) {
    if (prev != start) spans.push_back({prev, start, invert});
    spans.push_back({start, end, !invert});
    prev = end;
  }
  if (prev != text.size()) spans.push_back({prev, text.size(), invert});

  // Each kept piece is a [start, end) range; glued spans extend the last range.
  std::vector<std::pair<size_t, size_t>> pieces;
  pieces.reserve(spans.size());
  const size_t n = spans.size();
  for (size_t k = 0; k < n; ++k) {
    // MergedWithNext walks right to left so a match glues onto the span after it.
    const Span& s = behavior == SplitBehavior::kMergedWithNext ? spans[n - 1 - k] : spans[k];
    const Span* before = k == 0 ? nullptr
                         : behavior == SplitBehavior::kMergedWithNext ? &spans[n - k]
                                                                      : &spans[k - 1];
    switch (behavior) {
      case SplitBehavior::kIsolated:
        pieces.emplace_back(s.start, s.end);
        break;
      case SplitBehavior::kRemoved:
        if (!s.is_match) pieces.emplace_back(s.start, s.end);
        break;
      case SplitBehavior::kContiguous:
        if (s.is_match && before != nullptr && before->is_match) {
          pieces.back().second = s.end;
        } else {
          pieces.emplace_back(s.start, s.end);
        }
        break;
      case SplitBehavior::kMergedWithPrevious:
        if (s.is_match && before != nullptr && !before->is_match) {
          pieces.back().second = s.end;
        } else {
          pieces.emplace_back(s.start, s.end);
        }
        break;
      case SplitBehavior::kMergedWithNext:
        if (s.is_match && before != nullptr && !before->is_match) {
          pieces.back().first = s.start;
        } else {
          pieces.emplace_back(s.start, s.end);
        }
        break;
    }
  }
  if (behavior == SplitBehavior::kMergedWithNext) std::reverse(pieces.begin(), pieces.end());
  for (const auto& [start, end] : pieces) {
    if (end > start) out->emplace_back(text.substr(start, end - start));
  }
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void PreTokenize(std::vector<std::string>* pieces, bool starts_text) const override {
    for (const auto& step : steps_) step->PreTokenize(pieces, starts_text);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<std::string>* pieces, bool starts_text) const override {
    std::vector<std::string> out;
    out.reserve(pieces->size() * 4);
    for (const std::string& piece : *pieces) {
      SplitAlong(piece, pattern_.FindAll(piece), behavior_, invert_, &out);
    }
    *pieces = std::move(out);
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// The GPT-2 split, used when a ByteLevel pre-tokenizer has use_regex = true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Pattern> split)
      : add_prefix_space_(add_prefix_space), split_(std::move(split)) {}
  void PreTokenize(std::vector<std::string>* pieces, bool starts_text) const override {
    std::vector<std::string> split;
    split.reserve(pieces->size());
    for (std::string& piece : *pieces) {
      if (add_prefix_space_ && (piece.empty() || piece[0] != ' ')) piece.insert(piece.begin(), ' ');
      if (split_) {
        SplitAlong(piece, split_->FindAll(piece), SplitBehavior::kIsolated, false, &split);
      } else if (!piece.empty()) {
        split.push_back(std::move(piece));
      }
    }
    pieces->clear();
    for (const std::string& piece : split) {
      std::string spelled;
      spelled.reserve(piece.size() * 2);
      AppendByteLevel(piece, &spelled);
      pieces->push_back(std::move(spelled));
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Pattern> split_;  // null when use_regex is false
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void PreTokenize(std::vector<std::string>* pieces, bool starts_text) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces->size(); ++i) {
      std::string text = absl::StrReplaceAll((*pieces)[i], {{" ", replacement_}});
      const bool prepend = scheme_ == PrependScheme::kAlways ||
                           (scheme_ == PrependScheme::kFirst && i == 0 && starts_text);
      if (prepend && !text.starts_with(replacement_)) text.insert(0, replacement_);
      if (split_) {
        SplitAlong(text, Pattern::Literal(replacement_).FindAll(text),
                   SplitBehavior::kMergedWithNext, false, &out);
      } else if (!text.empty()) {
        out.push_back(std::move(text));
      }
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

// HF's Digits splits on char::is_numeric, i.e. every Unicode number (Nd, Nl, No: "𝟘", "²",
// "Ⅻ"), not only ASCII digits; PCRE2's \p{N} is the same class.
class DigitsPreTokenizer : public PreTokenizer {
 public:
  DigitsPreTokenizer(bool individual, std::unique_ptr<Regex> numeric)
      : individual_(individual), numeric_(std::move(numeric)) {}
  void PreTokenize(std::vector<std::string>* pieces, bool starts_text) const override {
    std::vector<std::string> out;
    for (const std::string& piece : *pieces) {
      std::vector<std::pair<size_t, size_t>> digits;
      numeric_->ForEachMatch(piece, [&](size_t start, size_t end) {
        if (end > start) digits.emplace_back(start, end);
      });
      SplitAlong(piece, digits,
                 individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false, &out);
    }
    *pieces = std::move(out);
  }

 private:
  bool individual_;
  std::unique_ptr<Regex> numeric_;  // one number character per match
};

absl::StatusOr<SplitBehavior> ParseBehavior(const std::string& name) {
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: unknown Split behavior '", name, "'"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<PreTokenizer>();
  if (!config.is_object() || !config.contains("type")) {
    return absl::InvalidArgumentError(
        "tokenizer.json: pre_tokenizer must be an object with a type");
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const auto& step : config.at("pretokenizers")) {
      absl::StatusOr<std::unique_ptr<PreTokenizer>> parsed = ParsePreTokenizer(step);
      if (!parsed.ok()) return parsed.status();
      if (*parsed) steps.push_back(*std::move(parsed));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split") {
    absl::StatusOr<Pattern> pattern = Pattern::FromJson(config.at("pattern"));
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<SplitBehavior> behavior = ParseBehavior(config.at("behavior"));
    if (!behavior.ok()) return behavior.status();
    return std::make_unique<SplitPreTokenizer>(*std::move(pattern), *behavior,
                                               config.value("invert", false));
  }
  if (type == "ByteLevel") {
    std::unique_ptr<Pattern> split;
    if (config.value("use_regex", true)) {
      absl::StatusOr<Pattern> pattern = Pattern::FromJson({{"Regex", kGpt2Pattern}});
      if (!pattern.ok()) return pattern.status();
      split = std::make_unique<Pattern>(*std::move(pattern));
    }
    return std::make_unique<ByteLevelPreTokenizer>(config.value("add_prefix_space", false),
                                                   std::move(split));
  }
  if (type == "Metaspace") {
    PrependScheme scheme = config.value("add_prefix_space", true) ? PrependScheme::kAlways
                                                                   : PrependScheme::kNever;
    if (config.contains("prepend_scheme")) {
      const std::string name = config["prepend_scheme"].get<std::string>();
      scheme = name == "first"   ? PrependScheme::kFirst
               : name == "never" ? PrependScheme::kNever
                                 : PrependScheme::kAlways;
    }
    return std::make_unique<MetaspacePreTokenizer>(config.value("replacement", "\u2581"), scheme,
                                                   config.value("split", true));
  }
  if (type == "Digits") {
    auto numeric = Regex::Compile("\\p{N}");
    if (!numeric.ok()) return numeric.status();
    return std::make_unique<DigitsPreTokenizer>(config.value("individual_digits", false),
                                                std::move(*numeric));
  }
  return absl::UnimplementedError(absl::StrCat(
      "tokenizer.json: pre_tokenizer type '", type,
      "' is not supported (supported: Sequence, Split, ByteLevel, Metaspace, Digits)"));
}

}  // namespace loraserve::tokenizer
