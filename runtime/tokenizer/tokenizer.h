// The text <-> token id boundary of the server: loads a Hugging Face tokenizer.json (plus
// tokenizer_config.json / generation_config.json beside it) and encodes, decodes and renders
// chat templates exactly like the reference `tokenizers` / `transformers` libraries.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/added_tokens.h"
#include "runtime/tokenizer/post_processor.h"

namespace loraserve {

namespace tokenizer {
class BpeModel;
class ChatTemplate;
class Decoder;
class Normalizer;
class PreTokenizer;
}  // namespace tokenizer

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool"
  std::string content;
};

class Tokenizer {
 public:
  // `path` is a tokenizer.json file or a folder holding one. Errors name the file and the
  // unsupported or malformed component.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // `config_json` is the content of tokenizer_config.json, or empty.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                             std::string_view config_json);
  ~Tokenizer();

  // Thread-safe. Invalid UTF-8 in `text` is first repaired to U+FFFD.
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;
  // Unknown ids are ignored. The result is always valid UTF-8.
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  // Model vocabulary plus added tokens: one past the largest id.
  int vocab_size() const { return vocab_size_; }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const {
    return eos_ids_.empty() ? std::nullopt : std::optional(eos_ids_[0]);
  }
  // Every id that ends generation: tokenizer_config's eos_token first, then
  // generation_config.json's eos_token_id entries.
  std::vector<int32_t> eos_ids() const { return eos_ids_; }
  std::optional<int32_t> TokenToId(std::string_view token) const;
  bool IsSpecial(int32_t id) const;

  // Renders tokenizer_config.json's chat_template (or `template_override` when non-empty) like
  // transformers' apply_chat_template(tokenize=False).
  absl::StatusOr<std::string> ApplyChatTemplate(const std::vector<ChatMessage>& messages,
                                                bool add_generation_prompt,
                                                std::string_view template_override = {}) const;

 private:
  Tokenizer();
  absl::Status LoadConfig(const nlohmann::json& config);
  void LoadGenerationConfig(const nlohmann::json& config);
  void EncodeSegment(std::string_view text, bool starts_text, std::vector<int32_t>* ids) const;

  std::unique_ptr<tokenizer::Normalizer> normalizer_;
  std::unique_ptr<tokenizer::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<tokenizer::BpeModel> model_;
  std::unique_ptr<tokenizer::Decoder> decoder_;
  tokenizer::AddedTokens added_tokens_;
  tokenizer::PostProcessor post_processor_;
  int vocab_size_ = 0;
  std::optional<int32_t> bos_id_;
  std::vector<int32_t> eos_ids_;
  // Special-token strings handed to chat templates (bos_token, eos_token, ...).
  nlohmann::json template_special_tokens_;
  std::unique_ptr<tokenizer::ChatTemplate> chat_template_;
  absl::Status chat_template_status_;  // why chat_template_ is null, when it is
};

}  // namespace loraserve
