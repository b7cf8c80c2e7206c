// Tokenizer loading and the encode/decode pipelines:
//   encode: added tokens -> normalizer -> pre-tokenizer -> BPE -> post-processor
//   decode: ids -> token strings (added tokens first) -> decoder chain
#include "runtime/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/added_tokens.h"
#include "runtime/tokenizer/bpe_model.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/decoder.h"
#include "runtime/tokenizer/normalizer.h"
#include "runtime/tokenizer/pre_tokenizer.h"
#include "runtime/tokenizer/utf8.h"

namespace loraserve {
namespace {

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// tokenizer_config.json spells special tokens either as a string or as a serialized
// AddedToken object with a "content" field.
std::optional<std::string> TokenString(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  std::filesystem::path json_path(path);
  std::error_code ec;
  if (std::filesystem::is_directory(json_path, ec)) json_path /= "tokenizer.json";
  absl::StatusOr<std::string> tokenizer_json = ReadFile(json_path);
  if (!tokenizer_json.ok()) {
    return absl::NotFoundError(absl::StrCat("tokenizer: cannot read ", json_path.string(),
                                            " (pass a tokenizer.json or a model folder)"));
  }
  const std::filesystem::path folder = json_path.parent_path();
  absl::StatusOr<std::string> config_json = ReadFile(folder / "tokenizer_config.json");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      FromJson(*tokenizer_json, config_json.ok() ? *config_json : "");
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(json_path.string(), ": ", tokenizer.status().message()));
  }
  absl::StatusOr<std::string> generation_json = ReadFile(folder / "generation_config.json");
  if (generation_json.ok()) {
    nlohmann::json generation = nlohmann::json::parse(*generation_json, nullptr, false);
    if (!generation.is_discarded()) (*tokenizer)->LoadGenerationConfig(generation);
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json,
                                                               std::string_view config_json) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  try {
    const nlohmann::json json = nlohmann::json::parse(tokenizer_json);
    if (!json.is_object() || !json.contains("model")) {
      return absl::InvalidArgumentError("tokenizer.json has no \"model\" section");
    }
    absl::StatusOr<tokenizer::AddedTokens> added =
        tokenizer::AddedTokens::FromJson(json.value("added_tokens", nlohmann::json()));
    if (!added.ok()) return added.status();
    t->added_tokens_ = *std::move(added);
    absl::StatusOr<std::unique_ptr<tokenizer::Normalizer>> normalizer =
        tokenizer::ParseNormalizer(json.value("normalizer", nlohmann::json()));
    if (!normalizer.ok()) return normalizer.status();
    t->normalizer_ = *std::move(normalizer);
    absl::StatusOr<std::unique_ptr<tokenizer::PreTokenizer>> pre_tokenizer =
        tokenizer::ParsePreTokenizer(json.value("pre_tokenizer", nlohmann::json()));
    if (!pre_tokenizer.ok()) return pre_tokenizer.status();
    t->pre_tokenizer_ = *std::move(pre_tokenizer);
    absl::StatusOr<std::unique_ptr<tokenizer::BpeModel>> model =
        tokenizer::BpeModel::FromJson(json["model"]);
    if (!model.ok()) return model.status();
    t->model_ = *std::move(model);
    absl::StatusOr<tokenizer::PostProcessor> post_processor =
        tokenizer::ParsePostProcessor(json.value("post_processor", nlohmann::json()));
    if (!post_processor.ok()) return post_processor.status();
    t->post_processor_ = *std::move(post_processor);
    absl::StatusOr<std::unique_ptr<tokenizer::Decoder>> decoder =
        tokenizer::ParseDecoder(json.value("decoder", nlohmann::json()));
    if (!decoder.ok()) return decoder.status();
    t->decoder_ = *std::move(decoder);

    t->vocab_size_ = t->model_->size();
    for (const tokenizer::AddedToken& token : t->added_tokens_.tokens()) {
      t->vocab_size_ = std::max(t->vocab_size_, token.id + 1);
    }
    const nlohmann::json config =
        config_json.empty() ? nlohmann::json::object() : nlohmann::json::parse(config_json);
    if (absl::Status status = t->LoadConfig(config); !status.ok()) return status;
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed tokenizer JSON: ", e.what()));
  }
  return t;
}

absl::Status Tokenizer::LoadConfig(const nlohmann::json& config) {
  template_special_tokens_ = nlohmann::json::object();
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    if (!config.contains(key)) continue;
    if (std::optional<std::string> token = TokenString(config[key])) {
      template_special_tokens_[key] = *token;
    }
  }
  if (config.contains("additional_special_tokens")) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& entry : config["additional_special_tokens"]) {
      if (std::optional<std::string> token = TokenString(entry)) list.push_back(*token);
    }
    template_special_tokens_["additional_special_tokens"] = list;
  }
  if (template_special_tokens_.contains("bos_token")) {
    bos_id_ = TokenToId(template_special_tokens_["bos_token"].get<std::string>());
  } else if (!post_processor_.prefix.empty()) {
    bos_id_ = post_processor_.prefix.front();
  }
  if (template_special_tokens_.contains("eos_token")) {
    if (std::optional<int32_t> eos =
            TokenToId(template_special_tokens_["eos_token"].get<std::string>())) {
      eos_ids_.push_back(*eos);
    }
  }

  const nlohmann::json source = config.value("chat_template", nlohmann::json());
  std::string template_text;
  if (source.is_string()) {
    template_text = source.get<std::string>();
  } else if (source.is_array()) {
    // A list of named templates; "default" is the one apply_chat_template uses.
    for (const auto& entry : source) {
      if (entry.value("name", "") == "default") template_text = entry.value("template", "");
    }
  }
  if (template_text.empty()) {
    chat_template_status_ = absl::FailedPreconditionError(
        "tokenizer_config.json has no chat_template; pass a template explicitly");
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<tokenizer::ChatTemplate>> parsed =
      tokenizer::ChatTemplate::Parse(template_text);
  if (parsed.ok()) {
    chat_template_ = *std::move(parsed);
  } else {
    chat_template_status_ = parsed.status();
  }
  return absl::OkStatus();
}

void Tokenizer::LoadGenerationConfig(const nlohmann::json& config) {
  const nlohmann::json eos = config.value("eos_token_id", nlohmann::json());
  std::vector<int32_t> ids;
  // generation_config.json is optional metadata: an id that is not a valid token id is skipped.
  if (eos.is_number_integer()) {
    if (absl::StatusOr<int32_t> id = tokenizer::ReadTokenId(eos, "eos_token_id"); id.ok()) ids.push_back(*id);
  }
  if (eos.is_array()) {
    for (const auto& entry : eos) {
      if (absl::StatusOr<int32_t> id = tokenizer::ReadTokenId(entry, "eos_token_id"); id.ok()) {
        ids.push_back(*id);
      }
    }
  }
  for (int32_t id : ids) {
    if (std::find(eos_ids_.begin(), eos_ids_.end(), id) == eos_ids_.end()) eos_ids_.push_back(id);
  }
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (std::optional<int32_t> id = added_tokens_.FindByContent(token)) return id;
  return model_->TokenToId(token);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  const tokenizer::AddedToken* token = added_tokens_.FindById(id);
  return token != nullptr && token->special;
}

void Tokenizer::EncodeSegment(std::string_view text, bool starts_text,
                              std::vector<int32_t>* ids) const {
  std::vector<std::string> pieces(1, std::string(text));
  if (normalizer_) normalizer_->Normalize(&pieces[0]);
  if (added_tokens_.has_normalized_tokens()) {
    const std::string normalized = std::move(pieces[0]);
    std::vector<tokenizer::TextSegment> segments;
    added_tokens_.Split(normalized, /*normalized=*/true, &segments);
    for (const tokenizer::TextSegment& segment : segments) {
      if (segment.id >= 0) {
        ids->push_back(segment.id);
        continue;
      }
      std::vector<std::string> sub(1, std::string(segment.text));
      if (pre_tokenizer_) pre_tokenizer_->PreTokenize(&sub, starts_text);
      for (const std::string& word : sub) model_->Tokenize(word, ids);
      starts_text = false;
    }
    return;
  }
  if (pre_tokenizer_) pre_tokenizer_->PreTokenize(&pieces, starts_text);
  for (const std::string& word : pieces) model_->Tokenize(word, ids);
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!tokenizer::IsValidUtf8(text)) {
    repaired = tokenizer::Utf8Lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = post_processor_.prefix;
  std::vector<tokenizer::TextSegment> segments;
  added_tokens_.Split(text, /*normalized=*/false, &segments);
  for (const tokenizer::TextSegment& segment : segments) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
    } else {
      EncodeSegment(segment.text, segment.text.data() == text.data(), &ids);
    }
  }
  if (add_special_tokens) {
    ids.insert(ids.end(), post_processor_.suffix.begin(), post_processor_.suffix.end());
  }
  return ids;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const tokenizer::AddedToken* added = added_tokens_.FindById(id)) {
      if (!(skip_special_tokens && added->special)) tokens.push_back(added->content);
    } else if (const std::string* token = model_->IdToToken(id)) {
      tokens.push_back(*token);
    }
  }
  if (!decoder_) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) absl::StrAppend(&joined, i ? " " : "", tokens[i]);
    return tokenizer::Utf8Lossy(joined);
  }
  decoder_->DecodeChain(&tokens);
  std::string text;
  for (const std::string& token : tokens) text += token;
  return tokenizer::IsValidUtf8(text) ? text : tokenizer::Utf8Lossy(text);
}

absl::StatusOr<std::string> Tokenizer::ApplyChatTemplate(const std::vector<ChatMessage>& messages,
                                                         bool add_generation_prompt,
                                                         std::string_view template_override) const {
  std::unique_ptr<tokenizer::ChatTemplate> override_template;
  const tokenizer::ChatTemplate* chat_template = chat_template_.get();
  if (!template_override.empty()) {
    absl::StatusOr<std::unique_ptr<tokenizer::ChatTemplate>> parsed =
        tokenizer::ChatTemplate::Parse(template_override);
    if (!parsed.ok()) return parsed.status();
    override_template = *std::move(parsed);
    chat_template = override_template.get();
  }
  if (chat_template == nullptr) return chat_template_status_;
  nlohmann::json context = template_special_tokens_;
  nlohmann::json list = nlohmann::json::array();
  for (const ChatMessage& message : messages) {
    list.push_back({{"role", message.role}, {"content", message.content}});
  }
  context["messages"] = std::move(list);
  context["add_generation_prompt"] = add_generation_prompt;
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  return chat_template->Render(context);
}

}  // namespace loraserve
