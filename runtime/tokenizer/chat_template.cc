// Parses a chat template once and renders it per request; interpreter errors (including the
// template's own raise_exception) come back as absl::Status.
#include "runtime/tokenizer/chat_template.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/jinja_ast.h"

namespace loraserve::tokenizer {

ChatTemplate::ChatTemplate(std::unique_ptr<jinja::Node> root) : root_(std::move(root)) {}
ChatTemplate::~ChatTemplate() = default;

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Parse(std::string_view source) {
  try {
    return std::unique_ptr<ChatTemplate>(new ChatTemplate(jinja::ParseTemplate(source)));
  } catch (const jinja::TemplateError& e) {
    return absl::InvalidArgumentError(absl::StrCat("chat_template: ", e.what()));
  }
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context) const {
  try {
    return jinja::RenderTemplate(*root_, jinja::Value::FromJson(context));
  } catch (const jinja::TemplateError& e) {
    return absl::InvalidArgumentError(absl::StrCat("chat_template: ", e.what()));
  }
}

}  // namespace loraserve::tokenizer
