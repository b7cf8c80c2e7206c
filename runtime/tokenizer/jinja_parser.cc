// Chunks and tokens (jinja_lexer.cc) -> syntax tree, by recursive descent with Jinja's operator
// precedence: filters and tests bind tighter than arithmetic, `not` looser than comparisons.
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <string>

#include "runtime/tokenizer/jinja_ast.h"
#include "runtime/tokenizer/jinja_lexer.h"

namespace loraserve::tokenizer::jinja {
namespace {

std::unique_ptr<Expr> MakeExpr(Expr::Kind kind) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  return e;
}

class ExpressionParser {
 public:
  ExpressionParser(const std::string& source, size_t offset)
      : tokens_(LexExpression(source, offset)), offset_(offset) {}

  std::unique_ptr<Expr> ParseExpression() { return ParseConditional(); }
  std::unique_ptr<Expr> ParseOr() {
    auto left = ParseAnd();
    while (AcceptName("or")) left = Binary("or", std::move(left), ParseAnd());
    return left;
  }
  bool AcceptName(const char* name) {
    if (Peek().type == Token::Type::kName && Peek().text == name) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool AcceptOp(const char* op) {
    if (Peek().type == Token::Type::kOperator && Peek().text == op) {
      ++pos_;
      return true;
    }
    return false;
  }
  std::string ExpectName() {
    if (Peek().type != Token::Type::kName) Fail("expected a name");
    return tokens_[pos_++].text;
  }
  void ExpectOp(const char* op) {
    if (!AcceptOp(op)) Fail(std::string("expected '") + op + "'");
  }
  bool AtEnd() const { return tokens_[pos_].type == Token::Type::kEnd; }
  void ExpectEnd() {
    if (!AtEnd()) Fail("unexpected '" + Peek().text + "'");
  }
  [[noreturn]] void Fail(const std::string& what) const {
    throw TemplateError(what + " in tag at offset " + std::to_string(offset_));
  }

 private:
  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  static std::unique_ptr<Expr> Binary(const std::string& op, std::unique_ptr<Expr> l,
                                      std::unique_ptr<Expr> r) {
    auto e = MakeExpr(Expr::Kind::kBinary);
    e->name = op;
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return e;
  }

  std::unique_ptr<Expr> ParseConditional() {
    auto value = ParseOr();
    if (!AcceptName("if")) return value;
    auto e = MakeExpr(Expr::Kind::kCondition);
    e->args.push_back(std::move(value));
    e->args.push_back(ParseOr());
    e->args.push_back(AcceptName("else") ? ParseConditional() : nullptr);
    return e;
  }
  std::unique_ptr<Expr> ParseAnd() {
    auto left = ParseNot();
    while (AcceptName("and")) left = Binary("and", std::move(left), ParseNot());
    return left;
  }
  std::unique_ptr<Expr> ParseNot() {
    if (AcceptName("not")) {
      auto e = MakeExpr(Expr::Kind::kUnary);
      e->name = "not";
      e->args.push_back(ParseNot());
      return e;
    }
    return ParseCompare();
  }
  std::unique_ptr<Expr> ParseCompare() {
    auto left = ParseAdditive();
    while (true) {
      const Token& t = Peek();
      if (t.type == Token::Type::kOperator &&
          (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == ">" || t.text == "<=" ||
           t.text == ">=")) {
        ++pos_;
        left = Binary(t.text, std::move(left), ParseAdditive());
      } else if (AcceptName("in")) {
        left = Binary("in", std::move(left), ParseAdditive());
      } else if (Peek().type == Token::Type::kName && Peek().text == "not" &&
                 Peek(1).type == Token::Type::kName && Peek(1).text == "in") {
        pos_ += 2;
        left = Binary("not in", std::move(left), ParseAdditive());
      } else {
        return left;
      }
    }
  }
  std::unique_ptr<Expr> ParseAdditive() {
    auto left = ParseConcat();
    while (Peek().type == Token::Type::kOperator && (Peek().text == "+" || Peek().text == "-")) {
      const std::string op = tokens_[pos_++].text;
      left = Binary(op, std::move(left), ParseConcat());
    }
    return left;
  }
  std::unique_ptr<Expr> ParseConcat() {
    auto left = ParseMultiplicative();
    while (AcceptOp("~")) left = Binary("~", std::move(left), ParseMultiplicative());
    return left;
  }
  std::unique_ptr<Expr> ParseMultiplicative() {
    auto left = ParsePower();
    while (Peek().type == Token::Type::kOperator &&
           (Peek().text == "*" || Peek().text == "/" || Peek().text == "//" || Peek().text == "%")) {
      const std::string op = tokens_[pos_++].text;
      left = Binary(op, std::move(left), ParsePower());
    }
    return left;
  }
  std::unique_ptr<Expr> ParsePower() {
    auto left = ParseUnary();
    while (AcceptOp("**")) left = Binary("**", std::move(left), ParseUnary());
    return left;
  }
  std::unique_ptr<Expr> ParseUnary() {
    if (Peek().type == Token::Type::kOperator && (Peek().text == "-" || Peek().text == "+")) {
      auto e = MakeExpr(Expr::Kind::kUnary);
      e->name = tokens_[pos_++].text;
      e->args.push_back(ParseUnary());
      return ParseFilters(std::move(e));
    }
    return ParseFilters(ParsePostfix(ParsePrimary()));
  }
  void ParseArguments(Expr* call) {
    if (AcceptOp(")")) return;
    do {
      if (Peek().type == Token::Type::kName && Peek(1).type == Token::Type::kOperator &&
          Peek(1).text == "=") {
        std::string name = tokens_[pos_].text;
        pos_ += 2;
        call->kwargs.emplace_back(std::move(name), ParseExpression());
      } else {
        call->args.push_back(ParseExpression());
      }
    } while (AcceptOp(","));
    ExpectOp(")");
  }
  std::unique_ptr<Expr> ParseFilters(std::unique_ptr<Expr> value) {
    while (true) {
      if (AcceptOp("|")) {
        auto e = MakeExpr(Expr::Kind::kFilter);
        e->name = ExpectName();
        e->args.push_back(std::move(value));
        if (AcceptOp("(")) ParseArguments(e.get());
        value = std::move(e);
      } else if (AcceptName("is")) {
        auto e = MakeExpr(Expr::Kind::kTest);
        e->negated = AcceptName("not");
        e->name = ExpectName();
        e->args.push_back(std::move(value));
        if (AcceptOp("(")) ParseArguments(e.get());
        value = std::move(e);
      } else {
        return value;
      }
    }
  }
  std::unique_ptr<Expr> ParsePostfix(std::unique_ptr<Expr> value) {
    while (true) {
      if (AcceptOp(".")) {
        auto e = MakeExpr(Expr::Kind::kAttribute);
        e->name = Peek().type == Token::Type::kInt ? tokens_[pos_++].text : ExpectName();
        e->args.push_back(std::move(value));
        value = std::move(e);
      } else if (AcceptOp("[")) {
        std::unique_ptr<Expr> parts[3];
        int colons = 0;
        while (!AcceptOp("]")) {
          if (AcceptOp(":")) {
            if (++colons > 2) Fail("bad slice");
          } else {
            parts[colons] = ParseExpression();
          }
        }
        auto e = MakeExpr(colons == 0 ? Expr::Kind::kItem : Expr::Kind::kSlice);
        e->args.push_back(std::move(value));
        if (colons == 0 && !parts[0]) Fail("empty subscript");
        for (int i = 0; i <= (colons == 0 ? 0 : 2); ++i) e->args.push_back(std::move(parts[i]));
        value = std::move(e);
      } else if (AcceptOp("(")) {
        auto e = MakeExpr(Expr::Kind::kCall);
        e->args.push_back(std::move(value));
        ParseArguments(e.get());
        value = std::move(e);
      } else {
        return value;
      }
    }
  }
  std::unique_ptr<Expr> ParsePrimary() {
    const Token t = Peek();
    ++pos_;
    switch (t.type) {
      case Token::Type::kName: {
        auto e = MakeExpr(Expr::Kind::kLiteral);
        if (t.text == "true" || t.text == "True") {
          e->value = Value::Bool(true);
        } else if (t.text == "false" || t.text == "False") {
          e->value = Value::Bool(false);
        } else if (t.text == "none" || t.text == "None") {
          e->value = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = t.text;
        }
        return e;
      }
      case Token::Type::kString: {
        std::string text = t.text;
        while (Peek().type == Token::Type::kString) text += tokens_[pos_++].text;
        auto e = MakeExpr(Expr::Kind::kLiteral);
        e->value = Value::String(std::move(text));
        return e;
      }
      case Token::Type::kInt:
      case Token::Type::kFloat: {
        std::string digits;
        for (char c : t.text) {
          if (c != '_') digits += c;
        }
        auto e = MakeExpr(Expr::Kind::kLiteral);
        if (t.type == Token::Type::kInt) {
          // Python's ints are unbounded; ours are int64 (std::stoll would throw out_of_range).
          int64_t value = 0;
          const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
          if (ec != std::errc() || end != digits.data() + digits.size()) {
            Fail("integer literal " + digits + " is out of range");
          }
          e->value = Value::Int(value);
        } else {
          // strtod, not std::stod: a literal beyond the double range is inf, as in Python.
          e->value = Value::Float(std::strtod(digits.c_str(), nullptr));
        }
        return e;
      }
      case Token::Type::kOperator:
        if (t.text == "(") {
          auto inner = ParseExpression();
          if (AcceptOp(")")) return inner;
          auto tuple = MakeExpr(Expr::Kind::kList);  // tuples behave as lists here
          tuple->args.push_back(std::move(inner));
          while (AcceptOp(",")) {
            if (Peek().text == ")") break;
            tuple->args.push_back(ParseExpression());
          }
          ExpectOp(")");
          return tuple;
        }
        if (t.text == "[") {
          auto list = MakeExpr(Expr::Kind::kList);
          while (!AcceptOp("]")) {
            list->args.push_back(ParseExpression());
            if (!AcceptOp(",")) {
              ExpectOp("]");
              break;
            }
          }
          return list;
        }
        if (t.text == "{") {
          auto dict = MakeExpr(Expr::Kind::kDict);
          while (!AcceptOp("}")) {
            dict->keys.push_back(ParseExpression());
            ExpectOp(":");
            dict->args.push_back(ParseExpression());
            if (!AcceptOp(",")) {
              ExpectOp("}");
              break;
            }
          }
          return dict;
        }
        break;
      default:
        break;
    }
    Fail("unexpected '" + t.text + "'");
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  size_t offset_;
};

class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Chunk> chunks) : chunks_(std::move(chunks)) {}

  std::unique_ptr<Node> ParseAll() {
    std::string end;
    auto root = ParseBody({}, &end);
    if (!end.empty()) throw TemplateError("unexpected {% " + end + " %}");
    return root;
  }

 private:
  static std::string Keyword(const Chunk& chunk) {
    size_t i = 0;
    while (i < chunk.content.size() && IsJinjaSpace(chunk.content[i])) ++i;
    size_t j = i;
    while (j < chunk.content.size() &&
           (std::isalnum(static_cast<unsigned char>(chunk.content[j])) || chunk.content[j] == '_')) {
      ++j;
    }
    return chunk.content.substr(i, j - i);
  }

  // Parses nodes until a statement whose keyword is in `stops`; its keyword goes to *end.
  std::unique_ptr<Node> ParseBody(const std::vector<std::string>& stops, std::string* end) {
    auto seq = std::make_unique<Node>();
    seq->kind = Node::Kind::kSequence;
    end->clear();
    while (pos_ < chunks_.size()) {
      const Chunk& chunk = chunks_[pos_];
      if (chunk.type == Chunk::Type::kText) {
        auto node = std::make_unique<Node>();
        node->kind = Node::Kind::kText;
        node->text = chunk.content;
        seq->children.push_back(std::move(node));
        ++pos_;
        continue;
      }
      ExpressionParser parser(chunk.content, chunk.offset);
      if (chunk.type == Chunk::Type::kExpression) {
        auto node = std::make_unique<Node>();
        node->kind = Node::Kind::kOutput;
        node->expr = parser.ParseExpression();
        parser.ExpectEnd();
        seq->children.push_back(std::move(node));
        ++pos_;
        continue;
      }
      const std::string keyword = Keyword(chunk);
      if (std::find(stops.begin(), stops.end(), keyword) != stops.end()) {
        *end = keyword;
        return seq;
      }
      ++pos_;
      parser.ExpectName();
      seq->children.push_back(ParseStatement(keyword, parser));
    }
    if (!stops.empty()) throw TemplateError("missing {% " + stops.back() + " %}");
    return seq;
  }

  std::unique_ptr<Node> ParseStatement(const std::string& keyword, ExpressionParser& parser) {
    auto node = std::make_unique<Node>();
    std::string end;
    if (keyword == "if") {
      node->kind = Node::Kind::kIf;
      std::unique_ptr<Expr> condition = parser.ParseExpression();
      parser.ExpectEnd();
      while (true) {
        auto body = ParseBody({"elif", "else", "endif"}, &end);
        node->branches.emplace_back(std::move(condition), std::move(body));
        ExpressionParser tag(chunks_[pos_].content, chunks_[pos_].offset);
        ++pos_;
        tag.ExpectName();
        if (end == "endif") break;
        if (end == "else") {
          tag.ExpectEnd();
          node->branches.emplace_back(nullptr, ParseBody({"endif"}, &end));
          ++pos_;
          break;
        }
        condition = tag.ParseExpression();
        tag.ExpectEnd();
      }
    } else if (keyword == "for") {
      node->kind = Node::Kind::kFor;
      do {
        node->targets.push_back(parser.ExpectName());
      } while (parser.AcceptOp(","));
      if (!parser.AcceptName("in")) parser.Fail("expected 'in'");
      node->expr = parser.ParseOr();
      if (parser.AcceptName("if")) node->filter = parser.ParseOr();
      if (parser.AcceptName("recursive")) parser.Fail("recursive loops are not supported");
      parser.ExpectEnd();
      node->body = ParseBody({"else", "endfor"}, &end);
      ++pos_;
      if (end == "else") {
        node->else_body = ParseBody({"endfor"}, &end);
        ++pos_;
      }
    } else if (keyword == "set") {
      node->kind = Node::Kind::kSet;
      node->targets.push_back(parser.ExpectName());
      if (parser.AcceptOp(".")) {
        node->attribute = parser.ExpectName();
      } else {
        while (parser.AcceptOp(",")) node->targets.push_back(parser.ExpectName());
      }
      if (parser.AtEnd()) {
        node->body = ParseBody({"endset"}, &end);
        ++pos_;
      } else {
        parser.ExpectOp("=");
        node->expr = parser.ParseExpression();
        parser.ExpectEnd();
      }
    } else if (keyword == "break" || keyword == "continue") {
      node->kind = keyword == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      parser.ExpectEnd();
    } else if (keyword == "generation") {
      // transformers' AssistantTracker extension: renders its body unchanged.
      node = ParseBody({"endgeneration"}, &end);
      ++pos_;
    } else {
      parser.Fail("unsupported statement '{% " + keyword + " %}'");
    }
    return node;
  }

  std::vector<Chunk> chunks_;
  size_t pos_ = 0;
};

}  // namespace

std::unique_ptr<Node> ParseTemplate(std::string_view source) {
  return TemplateParser(SplitChunks(source)).ParseAll();
}

}  // namespace loraserve::tokenizer::jinja
