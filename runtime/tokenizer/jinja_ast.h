// Syntax tree of the Jinja subset used by chat templates, produced by jinja_parser.cc and
// walked by jinja_interpreter.cc.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/tokenizer/jinja_value.h"

namespace loraserve::tokenizer::jinja {

struct Expr {
  enum class Kind {
    kLiteral,    // value
    kName,       // name
    kAttribute,  // args[0].name
    kItem,       // args[0][args[1]]
    kSlice,      // args[0][args[1]:args[2]:args[3]], missing parts are null
    kCall,       // args[0](args[1..], kwargs)
    kFilter,     // args[0] | name(args[1..], kwargs)
    kTest,       // args[0] is [not] name(args[1..])
    kUnary,      // op args[0]: "not", "-", "+"
    kBinary,     // args[0] op args[1]
    kCondition,  // args[0] if args[1] else args[2] (args[2] may be null)
    kList,       // [args...]
    kDict,       // {keys[i]: args[i]}
  };
  Kind kind;
  Value value;
  std::string name;  // variable, attribute, filter, test or operator
  bool negated = false;
  std::vector<std::unique_ptr<Expr>> args;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  std::vector<std::unique_ptr<Expr>> keys;
};

struct Node {
  enum class Kind {
    kSequence,  // children
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches: (condition or null for else, body)
    kFor,       // for targets in expr [if filter]: body [else: else_body]
    kSet,       // set targets (or attribute target.name) = expr, or block set: body
    kBreak,
    kContinue,
  };
  Kind kind;
  std::string text;
  std::unique_ptr<Expr> expr;
  std::unique_ptr<Expr> filter;
  std::vector<std::string> targets;  // loop variables or assigned names
  std::string attribute;             // set ns.attribute = ...
  std::vector<std::unique_ptr<Node>> children;
  std::vector<std::pair<std::unique_ptr<Expr>, std::unique_ptr<Node>>> branches;
  std::unique_ptr<Node> body;
  std::unique_ptr<Node> else_body;
};

// Parses a template with transformers' settings (trim_blocks, lstrip_blocks). Throws
// TemplateError naming the unsupported construct and its position.
std::unique_ptr<Node> ParseTemplate(std::string_view source);

// Renders `root` with `globals` as the outermost scope. Throws TemplateError.
std::string RenderTemplate(const Node& root, const Value& globals);

}  // namespace loraserve::tokenizer::jinja
