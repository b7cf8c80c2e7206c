// Chat templates: a Jinja subset interpreter sufficient to render the chat_template strings of
// Hugging Face tokenizer_config.json files exactly as transformers does (trim_blocks and
// lstrip_blocks on, loop controls, namespace(), the string methods templates use).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace loraserve::tokenizer {

namespace jinja {
struct Node;
}  // namespace jinja

class ChatTemplate {
 public:
  // Errors name the construct that is not supported and where it is in the template.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Parse(std::string_view source);
  ~ChatTemplate();

  // `context` holds the template variables (messages, add_generation_prompt, bos_token, ...).
  absl::StatusOr<std::string> Render(const nlohmann::json& context) const;

 private:
  explicit ChatTemplate(std::unique_ptr<jinja::Node> root);
  std::unique_ptr<jinja::Node> root_;
};

}  // namespace loraserve::tokenizer
