// Reads the "single" template; pair templates are irrelevant to a server encoding one prompt.
#include "runtime/tokenizer/post_processor.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/added_tokens.h"

namespace loraserve::tokenizer {
namespace {

absl::StatusOr<PostProcessor> ParseTemplate(const nlohmann::json& config) {
  PostProcessor result;
  bool seen_sequence = false;
  const nlohmann::json& special_tokens = config.value("special_tokens", nlohmann::json::object());
  for (const auto& piece : config.at("single")) {
    if (piece.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    if (!piece.contains("SpecialToken")) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: unknown TemplateProcessing piece ", piece.dump()));
    }
    const std::string name = piece["SpecialToken"].at("id").get<std::string>();
    if (!special_tokens.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.json: TemplateProcessing uses special token '", name,
          "' that is missing from its special_tokens map"));
    }
    std::vector<int32_t>& target = seen_sequence ? result.suffix : result.prefix;
    for (const auto& id : special_tokens[name].at("ids")) {
      absl::StatusOr<int32_t> read = ReadTokenId(id, absl::StrCat("id of special token ", name));
      if (!read.ok()) return read.status();
      target.push_back(*read);
    }
  }
  return result;
}

}  // namespace

absl::StatusOr<PostProcessor> ParsePostProcessor(const nlohmann::json& config) {
  if (config.is_null()) return PostProcessor{};
  const std::string type = config.value("type", "");
  if (type == "TemplateProcessing") return ParseTemplate(config);
  if (type == "ByteLevel") return PostProcessor{};
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    absl::StatusOr<int32_t> cls = ReadTokenId(config.at("cls").at(1), "post_processor.cls id");
    if (!cls.ok()) return cls.status();
    absl::StatusOr<int32_t> sep = ReadTokenId(config.at("sep").at(1), "post_processor.sep id");
    if (!sep.ok()) return sep.status();
    return PostProcessor{{*cls}, {*sep}};
  }
  if (type == "Sequence") {
    PostProcessor result;
    for (const auto& step : config.at("processors")) {
      absl::StatusOr<PostProcessor> parsed = ParsePostProcessor(step);
      if (!parsed.ok()) return parsed.status();
      result.prefix.insert(result.prefix.end(), parsed->prefix.begin(), parsed->prefix.end());
      result.suffix.insert(result.suffix.end(), parsed->suffix.begin(), parsed->suffix.end());
    }
    return result;
  }
  return absl::UnimplementedError(absl::StrCat(
      "tokenizer.json: post_processor type '", type,
      "' is not supported (supported: TemplateProcessing, ByteLevel, BertProcessing, "
      "RobertaProcessing, Sequence)"));
}

}  // namespace loraserve::tokenizer
