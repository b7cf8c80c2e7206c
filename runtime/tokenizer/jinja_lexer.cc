// Whitespace control follows jinja2's lexer: "{%-"/"-%}" strip all adjacent whitespace,
// lstrip_blocks removes spaces and tabs before a block tag that starts a line, trim_blocks
// removes the single newline after a block tag.
#include "runtime/tokenizer/jinja_lexer.h"

#include <cctype>

#include "runtime/tokenizer/jinja_value.h"

namespace loraserve::tokenizer::jinja {
namespace {

// Index of the closing delimiter `close` starting at `pos`, skipping quoted strings and
// bracketed expressions (so "{{ {'a': {'b': 1}} }}" closes at the last "}}").
size_t FindTagEnd(std::string_view src, size_t pos, std::string_view close) {
  char quote = 0;
  int depth = 0;
  for (size_t i = pos; i < src.size(); ++i) {
    const char c = src[i];
    if (quote) {
      if (c == '\\') {
        ++i;
      } else if (c == quote) {
        quote = 0;
      }
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (depth == 0 && src.substr(i, close.size()) == close) {
      return i;
    } else if (c == '{' || c == '(' || c == '[') {
      ++depth;
    } else if ((c == '}' || c == ')' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return std::string_view::npos;
}

}  // namespace

bool IsJinjaSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::vector<Chunk> SplitChunks(std::string_view src) {
  std::vector<Chunk> chunks;
  size_t pos = 0;
  bool line_starting = true;
  bool strip_next = false;
  while (pos < src.size()) {
    if (strip_next) {
      const size_t start = pos;
      while (pos < src.size() && IsJinjaSpace(src[pos])) ++pos;
      if (pos > start) line_starting = src[pos - 1] == '\n';
      strip_next = false;
    }
    size_t tag = pos;
    while (true) {
      tag = src.find('{', tag);
      if (tag == std::string_view::npos || tag + 1 >= src.size()) {
        tag = std::string_view::npos;
        break;
      }
      const char t = src[tag + 1];
      if (t == '{' || t == '%' || t == '#') break;
      ++tag;
    }
    std::string text(src.substr(pos, tag == std::string_view::npos ? std::string_view::npos : tag - pos));
    if (tag == std::string_view::npos) {
      if (!text.empty()) chunks.push_back({Chunk::Type::kText, text, pos});
      break;
    }
    const char type = src[tag + 1];
    size_t inner = tag + 2;
    const bool left_minus = inner < src.size() && src[inner] == '-';
    const bool left_plus = inner < src.size() && src[inner] == '+';
    if (left_minus || left_plus) ++inner;
    if (left_minus) {
      while (!text.empty() && IsJinjaSpace(text.back())) text.pop_back();
    } else if (type != '{' && !left_plus) {
      // lstrip_blocks: drop spaces and tabs between the line start and a block tag.
      const size_t line_start = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
      if ((line_start > 0 || line_starting) &&
          text.find_first_not_of(" \t", line_start) == std::string::npos) {
        text.resize(line_start);
      }
    }
    if (!text.empty()) chunks.push_back({Chunk::Type::kText, text, pos});
    const std::string close = type == '{' ? "}}" : type == '%' ? "%}" : "#}";
    const size_t end = type == '#' ? src.find(close, inner) : FindTagEnd(src, inner, close);
    if (end == std::string_view::npos) {
      throw TemplateError("unclosed tag starting at offset " + std::to_string(tag));
    }
    size_t inner_end = end;
    const bool right_minus = end > inner && src[end - 1] == '-';
    const bool right_plus = end > inner && src[end - 1] == '+';
    if (right_minus || right_plus) --inner_end;
    pos = end + 2;
    line_starting = false;
    if (right_minus) {
      strip_next = true;
    } else if (type != '{' && !right_plus && pos < src.size() && src[pos] == '\n') {
      ++pos;  // trim_blocks
      line_starting = true;
    }
    if (type == '#') continue;
    chunks.push_back({type == '{' ? Chunk::Type::kExpression : Chunk::Type::kStatement,
                      std::string(src.substr(inner, inner_end - inner)), tag});
  }
  return chunks;
}

std::vector<Token> LexExpression(const std::string& s, size_t offset) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (IsJinjaSpace(c)) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      tokens.push_back({Token::Type::kName, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool is_float = false;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_' ||
                              (s[j] == '.' && !is_float && j + 1 < s.size() &&
                               std::isdigit(static_cast<unsigned char>(s[j + 1]))))) {
        is_float |= s[j] == '.';
        ++j;
      }
      tokens.push_back({is_float ? Token::Type::kFloat : Token::Type::kInt, s.substr(i, j - i)});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string value;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] != '\\' || j + 1 >= s.size()) {
          value += s[j];
          continue;
        }
        const char e = s[++j];
        switch (e) {
          case 'n': value += '\n'; break;
          case 't': value += '\t'; break;
          case 'r': value += '\r'; break;
          case '0': value += '\0'; break;
          default: value += e; break;  // \\, \', \" and unknown escapes keep the character
        }
      }
      if (j >= s.size()) throw TemplateError("unterminated string near offset " + std::to_string(offset));
      tokens.push_back({Token::Type::kString, value});
      i = j + 1;
    } else {
      static const char* kTwoChar[] = {"==", "!=", "<=", ">=", "//", "**"};
      std::string op(1, c);
      for (const char* two : kTwoChar) {
        if (s.compare(i, 2, two) == 0) op = two;
      }
      if (std::string("+-*/%~()[]{},:.|=<>!").find(c) == std::string::npos) {
        throw TemplateError(std::string("unexpected character '") + c + "' in expression near offset " +
                            std::to_string(offset));
      }
      tokens.push_back({Token::Type::kOperator, op});
      i += op.size();
    }
  }
  tokens.push_back({Token::Type::kEnd, ""});
  return tokens;
}

}  // namespace loraserve::tokenizer::jinja
