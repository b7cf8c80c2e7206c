// Python semantics for template values: what prints, what is true, what is equal.
#include "runtime/tokenizer/jinja_value.h"

#include <cmath>
#include <cstdio>

namespace loraserve::tokenizer::jinja {

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}

Value Value::Float(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.f_ = f;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.s_ = std::move(s);
  return v;
}

Value Value::MakeList(List items) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<List>(std::move(items));
  return v;
}

Value Value::MakeDict(Dict items, bool is_namespace) {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::make_shared<Dict>(std::move(items));
  v.is_namespace_ = is_namespace;
  return v;
}

Value Value::FromJson(const nlohmann::json& json) {
  switch (json.type()) {
    case nlohmann::json::value_t::null:
      return None();
    case nlohmann::json::value_t::boolean:
      return Bool(json.get<bool>());
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return Int(json.get<int64_t>());
    case nlohmann::json::value_t::number_float:
      return Float(json.get<double>());
    case nlohmann::json::value_t::string:
      return String(json.get<std::string>());
    case nlohmann::json::value_t::array: {
      List items;
      for (const auto& item : json) items.push_back(FromJson(item));
      return MakeList(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Dict items;
      for (auto it = json.begin(); it != json.end(); ++it) {
        items.emplace_back(it.key(), FromJson(it.value()));
      }
      return MakeDict(std::move(items));
    }
    default:
      return Value();
  }
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return f_ != 0;
    case Kind::kString:
      return !s_.empty();
    case Kind::kList:
      return !list_->empty();
    case Kind::kDict:
      return is_namespace_ || !dict_->empty();
  }
  return false;
}

namespace {

std::string FloatRepr(double f) {
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  if (std::isnan(f)) return "nan";
  char buffer[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, f);
    if (std::strtod(buffer, nullptr) == f) break;
  }
  std::string out = buffer;
  if (out.find_first_of(".en") == std::string::npos) out += ".0";
  return out;
}

std::string QuoteRepr(const std::string& s) {
  const char quote = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      out += c;
    }
  }
  out += quote;
  return out;
}

// A JSON string literal. Bytes that are not UTF-8 become U+FFFD, as a Python str (which holds
// code points) would have them; nlohmann's default dump() throws on them instead.
std::string JsonString(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string Value::Str() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return s_;
    default:
      return Repr();
  }
}

std::string Value::Repr() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return b_ ? "True" : "False";
    case Kind::kInt:
      return std::to_string(i_);
    case Kind::kFloat:
      return FloatRepr(f_);
    case Kind::kString:
      return QuoteRepr(s_);
    case Kind::kList: {
      std::string out = "[";
      for (size_t i = 0; i < list_->size(); ++i) out += (i ? ", " : "") + (*list_)[i].Repr();
      return out + "]";
    }
    case Kind::kDict: {
      if (is_namespace_) return "<Namespace>";
      std::string out = "{";
      for (size_t i = 0; i < dict_->size(); ++i) {
        out += (i ? ", " : "") + QuoteRepr((*dict_)[i].first) + ": " + (*dict_)[i].second.Repr();
      }
      return out + "}";
    }
  }
  return "";
}

std::string Value::ToJson(int indent, int depth) const {
  std::string newline, close;
  if (indent > 0) {
    newline.append(1, '\n').append(static_cast<size_t>(indent) * (depth + 1), ' ');
    close.append(1, '\n').append(static_cast<size_t>(indent) * depth, ' ');
  }
  const std::string item_separator = indent > 0 ? "," : ", ";
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return "null";
    case Kind::kBool:
      return b_ ? "true" : "false";
    case Kind::kInt:
    case Kind::kFloat:
      return Repr();
    case Kind::kString:
      // ensure_ascii=False: only quotes, backslashes and control characters are escaped.
      return JsonString(s_);
    case Kind::kList: {
      if (list_->empty()) return "[]";
      std::string out = "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        out += (i ? item_separator : "") + newline + (*list_)[i].ToJson(indent, depth + 1);
      }
      return out + close + "]";
    }
    case Kind::kDict: {
      if (dict_->empty()) return "{}";
      std::string out = "{";
      for (size_t i = 0; i < dict_->size(); ++i) {
        out += (i ? item_separator : "") + newline + JsonString((*dict_)[i].first) + ": " +
               (*dict_)[i].second.ToJson(indent, depth + 1);
      }
      return out + close + "}";
    }
  }
  return "null";
}

bool Value::Equals(const Value& other) const {
  if (is_number() && other.is_number()) return number() == other.number();
  if ((kind_ == Kind::kBool || is_number()) && (other.kind_ == Kind::kBool || other.is_number())) {
    const double a = kind_ == Kind::kBool ? b_ : number();
    const double b = other.kind_ == Kind::kBool ? other.b_ : other.number();
    return a == b;
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kBool:
      return b_ == other.b_;
    case Kind::kString:
      return s_ == other.s_;
    case Kind::kList:
      if (list_->size() != other.list_->size()) return false;
      for (size_t i = 0; i < list_->size(); ++i) {
        if (!(*list_)[i].Equals((*other.list_)[i])) return false;
      }
      return true;
    case Kind::kDict:
      return dict_ == other.dict_;
    default:
      return false;
  }
}

const Value* Value::Find(const std::string& key) const {
  if (kind_ != Kind::kDict) return nullptr;
  for (const auto& [name, value] : *dict_) {
    if (name == key) return &value;
  }
  return nullptr;
}

bool Value::Reaches(const Dict* target) const {
  if (kind_ == Kind::kDict) {
    if (dict_.get() == target) return true;
    for (const auto& [name, item] : *dict_) {
      if (item.Reaches(target)) return true;
    }
  } else if (kind_ == Kind::kList) {
    for (const Value& item : *list_) {
      if (item.Reaches(target)) return true;
    }
  }
  return false;
}

void Value::Set(const std::string& key, Value value) const {
  // Containers are reference-counted: storing a dict inside itself would make a cycle that is
  // never freed (`{% set ns.x = ns %}` leaked on every render), and Python's repr of it would
  // recurse without end here. Jinja allows it; no chat template needs it.
  if (value.Reaches(dict_.get())) {
    throw TemplateError("cannot store namespace attribute '" + key +
                        "': the value contains the namespace itself");
  }
  for (auto& [name, existing] : *dict_) {
    if (name == key) {
      existing = std::move(value);
      return;
    }
  }
  dict_->emplace_back(key, std::move(value));
}

}  // namespace loraserve::tokenizer::jinja
