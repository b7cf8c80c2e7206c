// The value model of the chat-template interpreter: Python-like dynamic values (None, bool,
// int, float, str, list, dict, namespace) with Jinja's truthiness, str() and equality rules.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace loraserve::tokenizer::jinja {

// Thrown inside the interpreter only; ChatTemplate turns it into an absl::Status.
class TemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict };
  using List = std::vector<Value>;
  using Dict = std::vector<std::pair<std::string, Value>>;  // insertion order, like Python

  Value() = default;  // undefined
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s);
  static Value MakeList(List items = {});
  static Value MakeDict(Dict items = {}, bool is_namespace = false);
  static Value FromJson(const nlohmann::json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return is_namespace_; }

  bool boolean() const { return b_; }
  int64_t integer() const { return i_; }
  double number() const { return kind_ == Kind::kFloat ? f_ : static_cast<double>(i_); }
  const std::string& string() const { return s_; }
  // Lists and dicts are shared by reference, as in Python.
  List& list() const { return *list_; }
  Dict& dict() const { return *dict_; }

  bool Truthy() const;
  std::string Str() const;   // Python str()
  std::string Repr() const;  // Python repr(), used for lists and dicts
  // json.dumps with the given separators (Python defaults: ", " and ": ").
  std::string ToJson(int indent, int depth = 0) const;
  bool Equals(const Value& other) const;
  // Dict lookup; null when absent or not a dict.
  const Value* Find(const std::string& key) const;
  // Sets a dict entry; TemplateError when `value` contains this dict (a reference cycle).
  void Set(const std::string& key, Value value) const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  bool is_namespace_ = false;

  // Whether this value is, or holds through lists and dicts, the dict storage `target`.
  bool Reaches(const Dict* target) const;
};

}  // namespace loraserve::tokenizer::jinja
