// The normalizer implementations. Offsets are not tracked: the server only needs ids.
#include "runtime/tokenizer/normalizer.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "runtime/tokenizer/pattern.h"
#include "runtime/tokenizer/unicode_normalization.h"
#include "runtime/tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void Normalize(std::string* text) const override {
    for (const auto& step : steps_) step->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override {
    *text = pattern_.ReplaceAll(*text, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class NfcNormalizer : public Normalizer {
 public:
  void Normalize(std::string* text) const override { *text = ToNfc(*text); }
};

class NfdNormalizer : public Normalizer {
 public:
  void Normalize(std::string* text) const override { *text = ToNfd(*text); }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void Normalize(std::string* text) const override {
    size_t begin = 0, end = text->size();
    if (left_) {
      while (begin < end) {
        size_t next = begin;
        if (!IsUnicodeWhitespace(DecodeUtf8(*text, &next))) break;
        begin = next;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>((*text)[start]) & 0xC0) == 0x80) {
          --start;
        }
        size_t probe = start;
        if (!IsUnicodeWhitespace(DecodeUtf8(*text, &probe))) break;
        end = start;
      }
    }
    *text = text->substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<Normalizer>();
  if (!config.is_object() || !config.contains("type")) {
    return absl::InvalidArgumentError("tokenizer.json: normalizer must be an object with a type");
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& step : config.at("normalizers")) {
      absl::StatusOr<std::unique_ptr<Normalizer>> parsed = ParseNormalizer(step);
      if (!parsed.ok()) return parsed.status();
      if (*parsed) steps.push_back(*std::move(parsed));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") {
    return std::make_unique<PrependNormalizer>(config.at("prepend").get<std::string>());
  }
  if (type == "Replace") {
    absl::StatusOr<Pattern> pattern = Pattern::FromJson(config.at("pattern"));
    if (!pattern.ok()) return pattern.status();
    return std::make_unique<ReplaceNormalizer>(*std::move(pattern),
                                               config.at("content").get<std::string>());
  }
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "NFD") return std::make_unique<NfdNormalizer>();
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(config.value("strip_left", true),
                                             config.value("strip_right", true));
  }
  return absl::UnimplementedError(absl::StrCat(
      "tokenizer.json: normalizer type '", type,
      "' is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, Strip)"));
}

}  // namespace loraserve::tokenizer
