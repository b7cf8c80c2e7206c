// Walks the template tree. Scoping follows Jinja: every for-loop iteration gets a fresh scope
// (assignments inside do not leak out; namespace() objects are the escape hatch), if-blocks
// share their parent's scope. Python semantics for str methods, slicing and truthiness.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <unordered_map>

#include "runtime/tokenizer/jinja_ast.h"
#include "runtime/tokenizer/jinja_builtins.h"

namespace loraserve::tokenizer::jinja {
namespace {

class Interpreter {
 public:
  explicit Interpreter(const Value& globals) : globals_(globals) {}

  enum class Flow { kNormal, kBreak, kContinue };

  Flow Render(const Node& node, std::string* out) {
    switch (node.kind) {
      case Node::Kind::kSequence:
        for (const auto& child : node.children) {
          const Flow flow = Render(*child, out);
          if (flow != Flow::kNormal) return flow;
        }
        return Flow::kNormal;
      case Node::Kind::kText:
        *out += node.text;
        return Flow::kNormal;
      case Node::Kind::kOutput:
        *out += Eval(*node.expr).Str();
        return Flow::kNormal;
      case Node::Kind::kIf:
        for (const auto& [condition, body] : node.branches) {
          if (!condition || Eval(*condition).Truthy()) return Render(*body, out);
        }
        return Flow::kNormal;
      case Node::Kind::kFor:
        RenderFor(node, out);
        return Flow::kNormal;
      case Node::Kind::kSet: {
        Value value;
        if (node.body) {
          std::string captured;
          Render(*node.body, &captured);
          value = Value::String(captured);
        } else {
          value = Eval(*node.expr);
        }
        if (!node.attribute.empty()) {
          const Value target = Lookup(node.targets[0]);
          if (!target.is_namespace()) {
            throw TemplateError("cannot set attribute '" + node.attribute + "' on non-namespace '" +
                                node.targets[0] + "'");
          }
          target.Set(node.attribute, std::move(value));
        } else {
          Assign(node.targets, value);
        }
        return Flow::kNormal;
      }
      case Node::Kind::kBreak:
        return Flow::kBreak;
      case Node::Kind::kContinue:
        return Flow::kContinue;
    }
    return Flow::kNormal;
  }

 private:
  void Assign(const std::vector<std::string>& targets, const Value& value) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = value;
      return;
    }
    const Value::List items = Iterate(value);
    if (items.size() != targets.size()) {
      throw TemplateError("cannot unpack " + std::to_string(items.size()) + " values into " +
                          std::to_string(targets.size()) + " names");
    }
    for (size_t i = 0; i < targets.size(); ++i) scopes_.back()[targets[i]] = items[i];
  }

  void RenderFor(const Node& node, std::string* out) {
    Value::List items = Iterate(Eval(*node.expr));
    if (node.filter) {
      Value::List kept;
      for (const Value& item : items) {
        scopes_.emplace_back();
        Assign(node.targets, item);
        if (Eval(*node.filter).Truthy()) kept.push_back(item);
        scopes_.pop_back();
      }
      items = std::move(kept);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      scopes_.emplace_back();
      Assign(node.targets, items[i]);
      scopes_.back()["loop"] = Value::MakeDict({
          {"index0", Value::Int(i)},
          {"index", Value::Int(i + 1)},
          {"revindex0", Value::Int(n - i - 1)},
          {"revindex", Value::Int(n - i)},
          {"first", Value::Bool(i == 0)},
          {"last", Value::Bool(i == n - 1)},
          {"length", Value::Int(n)},
          {"previtem", i > 0 ? items[i - 1] : Value()},
          {"nextitem", i + 1 < n ? items[i + 1] : Value()},
      });
      const Flow flow = Render(*node.body, out);
      scopes_.pop_back();
      if (flow == Flow::kBreak) break;
    }
    if (n == 0 && node.else_body) Render(*node.else_body, out);
  }

  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    if (const Value* global = globals_.Find(name)) return *global;
    return Value();
  }

  std::vector<Value> EvalArgs(const Expr& e, size_t first) {
    std::vector<Value> args;
    for (size_t i = first; i < e.args.size(); ++i) args.push_back(Eval(*e.args[i]));
    return args;
  }

  Arguments EvalArguments(const Expr& e, size_t first) {
    Arguments arguments;
    arguments.positional = EvalArgs(e, first);
    for (const auto& [key, value] : e.kwargs) arguments.keyword.emplace_back(key, Eval(*value));
    return arguments;
  }

  Value Eval(const Expr& e);
  Value BinaryOp(const std::string& op, const Value& a, const Value& b);

  const Value& globals_;
  std::vector<std::unordered_map<std::string, Value>> scopes_ = {{}};
};

Value Interpreter::Eval(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.value;
    case Expr::Kind::kName:
      return Lookup(e.name);
    case Expr::Kind::kAttribute: {
      const Value object = Eval(*e.args[0]);
      if (const Value* found = object.Find(e.name)) return *found;
      if (object.is_list() && !e.name.empty() && std::isdigit(static_cast<unsigned char>(e.name[0]))) {
        size_t index = 0;  // from_chars, not std::stoul: a huge index is absent, not a throw
        const auto [end, ec] = std::from_chars(e.name.data(), e.name.data() + e.name.size(), index);
        if (ec == std::errc() && index < object.list().size()) return object.list()[index];
      }
      return Value();
    }
    case Expr::Kind::kItem: {
      const Value object = Eval(*e.args[0]);
      const Value key = Eval(*e.args[1]);
      if (object.is_dict() && key.is_string()) {
        const Value* found = object.Find(key.string());
        return found ? *found : Value();
      }
      if ((object.is_list() || object.is_string()) && key.kind() == Value::Kind::kInt) {
        const int64_t k = key.integer();
        const Value one =
            Slice(object, key, Value::Int(k == -1 || k == INT64_MAX ? INT64_MAX : k + 1), Value());
        if (object.is_list()) return one.list().empty() ? Value() : one.list()[0];
        return one.string().empty() ? Value() : one;
      }
      return Value();
    }
    case Expr::Kind::kSlice: {
      auto part = [&](int i) { return e.args[i] ? Eval(*e.args[i]) : Value(); };
      return Slice(Eval(*e.args[0]), part(1), part(2), part(3));
    }
    case Expr::Kind::kCall: {
      const Expr& callee = *e.args[0];
      if (callee.kind == Expr::Kind::kAttribute) {
        return CallMethod(Eval(*callee.args[0]), callee.name, EvalArguments(e, 1));
      }
      if (callee.kind == Expr::Kind::kName) return CallFunction(callee.name, EvalArguments(e, 1));
      throw TemplateError("calling this expression is not supported");
    }
    case Expr::Kind::kFilter:
      return ApplyFilter(e.name, Eval(*e.args[0]), EvalArguments(e, 1));
    case Expr::Kind::kTest:
      return Value::Bool(ApplyTest(e.name, Eval(*e.args[0]), EvalArguments(e, 1)) != e.negated);
    case Expr::Kind::kUnary: {
      const Value v = Eval(*e.args[0]);
      if (e.name == "not") return Value::Bool(!v.Truthy());
      if (!v.is_number()) throw TemplateError("unary " + e.name + " on " + v.Repr());
      if (e.name == "+") return v;
      if (v.kind() == Value::Kind::kInt && v.integer() == INT64_MIN) {
        throw TemplateError("integer overflow in unary '-'");
      }
      return v.kind() == Value::Kind::kInt ? Value::Int(-v.integer()) : Value::Float(-v.number());
    }
    case Expr::Kind::kBinary: {
      const Value left = Eval(*e.args[0]);
      if (e.name == "and") return left.Truthy() ? Eval(*e.args[1]) : left;
      if (e.name == "or") return left.Truthy() ? left : Eval(*e.args[1]);
      return BinaryOp(e.name, left, Eval(*e.args[1]));
    }
    case Expr::Kind::kCondition:
      if (Eval(*e.args[1]).Truthy()) return Eval(*e.args[0]);
      return e.args[2] ? Eval(*e.args[2]) : Value();
    case Expr::Kind::kList:
      return Value::MakeList(EvalArgs(e, 0));
    case Expr::Kind::kDict: {
      Value::Dict items;
      for (size_t i = 0; i < e.keys.size(); ++i) {
        items.emplace_back(Eval(*e.keys[i]).Str(), Eval(*e.args[i]));
      }
      return Value::MakeDict(std::move(items));
    }
  }
  return Value();
}

Value Interpreter::BinaryOp(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return Value::Bool(a.Equals(b));
  if (op == "!=") return Value::Bool(!a.Equals(b));
  if (op == "in" || op == "not in") {
    bool found = false;
    if (b.is_string() && a.is_string()) {
      found = b.string().find(a.string()) != std::string::npos;
    } else if (b.is_dict() && a.is_string()) {
      found = b.Find(a.string()) != nullptr;
    } else {
      for (const Value& item : Iterate(b)) found |= item.Equals(a);
    }
    return Value::Bool(found == (op == "in"));
  }
  if (op == "~") return Value::String(a.Str() + b.Str());
  if (op == "+" && a.is_string() && b.is_string()) return Value::String(a.string() + b.string());
  if (op == "+" && a.is_list() && b.is_list()) {
    Value::List items = a.list();
    items.insert(items.end(), b.list().begin(), b.list().end());
    return Value::MakeList(std::move(items));
  }
  if (op == "*" && a.is_string() && b.kind() == Value::Kind::kInt) {
    if (b.integer() > 0 && a.string().size() * static_cast<__int128>(b.integer()) > kMaxStringBytes) {
      throw TemplateError("'*' would make a string of more than " +
                          std::to_string(kMaxStringBytes) + " bytes");
    }
    std::string out;
    for (int64_t i = 0; i < b.integer(); ++i) out += a.string();
    return Value::String(out);
  }
  if (a.is_string() && b.is_string()) {
    if (op == "<") return Value::Bool(a.string() < b.string());
    if (op == ">") return Value::Bool(a.string() > b.string());
    if (op == "<=") return Value::Bool(a.string() <= b.string());
    if (op == ">=") return Value::Bool(a.string() >= b.string());
  }
  if (!a.is_number() || !b.is_number()) {
    throw TemplateError("unsupported operands for '" + op + "': " + a.Repr() + " and " + b.Repr());
  }
  const bool ints = a.kind() == Value::Kind::kInt && b.kind() == Value::Kind::kInt;
  const double x = a.number(), y = b.number();
  if (op == "<") return Value::Bool(x < y);
  if (op == ">") return Value::Bool(x > y);
  if (op == "<=") return Value::Bool(x <= y);
  if (op == ">=") return Value::Bool(x >= y);
  // Python's ints are unbounded and ours are int64: a result outside int64 is an error, where
  // C++ arithmetic would be undefined behaviour.
  const auto overflow = [&op] { return TemplateError("integer overflow in '" + op + "'"); };
  const int64_t i = a.integer(), j = b.integer();
  int64_t r = 0;
  if (op == "+") {
    if (ints && __builtin_add_overflow(i, j, &r)) throw overflow();
    return ints ? Value::Int(r) : Value::Float(x + y);
  }
  if (op == "-") {
    if (ints && __builtin_sub_overflow(i, j, &r)) throw overflow();
    return ints ? Value::Int(r) : Value::Float(x - y);
  }
  if (op == "*") {
    if (ints && __builtin_mul_overflow(i, j, &r)) throw overflow();
    return ints ? Value::Int(r) : Value::Float(x * y);
  }
  if (op == "**") {
    if (!ints || j < 0) return Value::Float(std::pow(x, y));
    const double p = std::pow(x, y);
    if (!(std::fabs(p) < 9.2e18)) throw overflow();
    return Value::Int(static_cast<int64_t>(p));
  }
  if (y == 0) throw TemplateError("division by zero");
  if (op == "/") return Value::Float(x / y);
  if (op == "//") {
    if (!ints) return Value::Float(std::floor(x / y));
    if (i == INT64_MIN && j == -1) throw overflow();
    return Value::Int(i / j - (i % j != 0 && (i < 0) != (j < 0)));  // floor, as in Python
  }
  if (op == "%") {
    if (ints) {
      if (j == -1) return Value::Int(0);  // INT64_MIN % -1 is undefined in C++
      const int64_t m = i % j;
      return Value::Int(m != 0 && ((m < 0) != (j < 0)) ? m + j : m);
    }
    return Value::Float(x - y * std::floor(x / y));
  }
  throw TemplateError("unsupported operator '" + op + "'");
}

}  // namespace

std::string RenderTemplate(const Node& root, const Value& globals) {
  Interpreter interpreter(globals);
  std::string out;
  interpreter.Render(root, &out);
  return out;
}

}  // namespace loraserve::tokenizer::jinja
