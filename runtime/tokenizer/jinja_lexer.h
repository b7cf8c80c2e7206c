// Lexing for the chat-template interpreter: cuts template source into text, {{ }} and {% %}
// chunks with Jinja's whitespace control as transformers configures it (trim_blocks and
// lstrip_blocks on, "-" and "+" modifiers), and splits tag contents into expression tokens.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace loraserve::tokenizer::jinja {

struct Chunk {
  enum class Type { kText, kExpression, kStatement };
  Type type;
  std::string content;
  size_t offset;  // in the template source, for error messages
};

struct Token {
  enum class Type { kName, kString, kInt, kFloat, kOperator, kEnd };
  Type type;
  std::string text;
};

bool IsJinjaSpace(char c);
// Comments are dropped; whitespace control is already applied to the text chunks.
std::vector<Chunk> SplitChunks(std::string_view source);
// Throws TemplateError on characters that cannot start a token.
std::vector<Token> LexExpression(const std::string& source, size_t offset);

}  // namespace loraserve::tokenizer::jinja
