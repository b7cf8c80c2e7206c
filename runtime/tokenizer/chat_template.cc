#include "runtime/tokenizer/chat_template.h"
namespace loraserve::tokenizer {
namespace jinja { struct Node {}; }
ChatTemplate::ChatTemplate(std::unique_ptr<jinja::Node> root) : root_(std::move(root)) {}
ChatTemplate::~ChatTemplate() = default;
absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Parse(std::string_view source) {
  return absl::UnimplementedError("x");
}
absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context) const {
  return absl::UnimplementedError("x");
}
}
