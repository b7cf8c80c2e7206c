// Builtins for chat templates. Only what real chat templates use is here; anything else is a
// TemplateError naming the missing method, filter or test.
#include "runtime/tokenizer/jinja_builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>

#include "runtime/tokenizer/utf8.h"

namespace loraserve::tokenizer::jinja {
namespace {

// Code point boundaries of a UTF-8 string, so indexing and slicing count characters.
std::vector<std::string> Characters(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const int len = Utf8SequenceLength(s, i);
    i += len == 0 ? 1 : len;
    out.push_back(s.substr(start, i - start));
  }
  return out;
}

bool IsPythonSpace(char32_t cp) { return IsUnicodeWhitespace(cp) || (cp >= 0x1C && cp <= 0x1F); }

// str.strip / lstrip / rstrip; `chars` null means whitespace.
std::string Strip(const std::string& s, const std::string* chars, bool left, bool right) {
  std::vector<std::string> cs = Characters(s);
  std::vector<std::string> set = chars ? Characters(*chars) : std::vector<std::string>();
  auto strippable = [&](const std::string& c) {
    if (chars) return std::find(set.begin(), set.end(), c) != set.end();
    size_t pos = 0;
    return IsPythonSpace(DecodeUtf8(c, &pos));
  };
  size_t begin = 0, end = cs.size();
  while (left && begin < end && strippable(cs[begin])) ++begin;
  while (right && end > begin && strippable(cs[end - 1])) --end;
  std::string out;
  for (size_t i = begin; i < end; ++i) out += cs[i];
  return out;
}

Value Split(const std::string& s, const Value* sep, int64_t max_split) {
  Value::List parts;
  if (sep == nullptr || sep->is_none()) {
    std::vector<std::string> cs = Characters(s);
    std::string current;
    bool in_word = false;
    for (size_t i = 0; i < cs.size(); ++i) {
      size_t pos = 0;
      const bool space = IsPythonSpace(DecodeUtf8(cs[i], &pos));
      if (space && in_word && (max_split < 0 || static_cast<int64_t>(parts.size()) < max_split)) {
        parts.push_back(Value::String(current));
        current.clear();
        in_word = false;
      } else if (!space || in_word) {
        current += cs[i];
        in_word = true;
      }
    }
    if (in_word) parts.push_back(Value::String(Strip(current, nullptr, false, true)));
    return Value::MakeList(std::move(parts));
  }
  const std::string& delimiter = sep->string();
  if (delimiter.empty()) throw TemplateError("split(): empty separator");
  size_t start = 0;
  while (true) {
    const size_t hit = s.find(delimiter, start);
    if (hit == std::string::npos ||
        (max_split >= 0 && static_cast<int64_t>(parts.size()) >= max_split)) {
      break;
    }
    parts.push_back(Value::String(s.substr(start, hit - start)));
    start = hit + delimiter.size();
  }
  parts.push_back(Value::String(s.substr(start)));
  return Value::MakeList(std::move(parts));
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t start = 0;
  for (size_t hit; (hit = s.find(from, start)) != std::string::npos; start = hit + from.size()) {
    out += s.substr(start, hit - start) + to;
  }
  return out + s.substr(start);
}

std::string MapAscii(std::string s, int (*f)(int)) {
  for (char& c : s) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  return s;
}

int64_t Length(const Value& v) {
  if (v.is_string()) return static_cast<int64_t>(Characters(v.string()).size());
  if (v.is_list()) return static_cast<int64_t>(v.list().size());
  if (v.is_dict()) return static_cast<int64_t>(v.dict().size());
  if (v.is_undefined()) return 0;
  throw TemplateError("length of a value that has none: " + v.Repr());
}



}  // namespace

Value Arguments::Get(const std::string& name, size_t index, Value fallback) const {
  for (const auto& [key, value] : keyword) {
    if (key == name) return value;
  }
  return index < positional.size() ? positional[index] : fallback;
}

Value::List Iterate(const Value& v) {
  if (v.is_list()) return v.list();
  Value::List items;
  if (v.is_dict()) {
    for (const auto& [key, value] : v.dict()) items.push_back(Value::String(key));
  } else if (v.is_string()) {
    for (std::string& c : Characters(v.string())) items.push_back(Value::String(std::move(c)));
  } else if (!v.is_undefined() && !v.is_none()) {
    throw TemplateError("cannot iterate over " + v.Repr());
  }
  return items;
}

Value Slice(const Value& v, const Value& start_v, const Value& stop_v, const Value& step_v) {
  if (!v.is_string() && !v.is_list()) throw TemplateError("cannot slice " + v.Repr());
  const bool is_string = v.is_string();
  std::vector<std::string> chars;
  if (is_string) chars = Characters(v.string());
  const int64_t n = is_string ? static_cast<int64_t>(chars.size()) : Length(v);
  const int64_t step = step_v.is_number() ? step_v.integer() : 1;
  if (step == 0) throw TemplateError("slice step cannot be zero");
  auto clamp = [&](const Value& bound, int64_t fallback) {
    if (!bound.is_number()) return fallback;
    int64_t i = bound.integer();
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  const int64_t start = clamp(start_v, step > 0 ? 0 : n - 1);
  const int64_t stop = clamp(stop_v, step > 0 ? n : -1);
  std::string text;
  Value::List items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
    if (is_string) {
      text += chars[i];
    } else {
      items.push_back(v.list()[i]);
    }
    if (__builtin_add_overflow(i, step, &i)) break;  // past the end either way
  }
  return is_string ? Value::String(text) : Value::MakeList(std::move(items));
}

Value CallMethod(const Value& object, const std::string& method, const Arguments& args) {
  if (object.is_string()) {
    const std::string& s = object.string();
    const Value arg0 = args.Get("", 0);
    if (method == "strip" || method == "lstrip" || method == "rstrip") {
      const std::string* chars = arg0.is_string() ? &arg0.string() : nullptr;
      return Value::String(Strip(s, chars, method != "rstrip", method != "lstrip"));
    }
    if (method == "split") {
      const Value sep = args.Get("sep", 0);
      const Value max_split = args.Get("maxsplit", 1, Value::Int(-1));
      return Split(s, &sep, max_split.integer());
    }
    if (method == "startswith") return Value::Bool(s.starts_with(arg0.Str()));
    if (method == "endswith") return Value::Bool(s.ends_with(arg0.Str()));
    if (method == "upper") return Value::String(MapAscii(s, std::toupper));
    if (method == "lower") return Value::String(MapAscii(s, std::tolower));
    if (method == "replace") return Value::String(Replace(s, arg0.Str(), args.Get("", 1).Str()));
    if (method == "find") {
      const size_t hit = s.find(arg0.Str());
      return Value::Int(hit == std::string::npos
                            ? -1
                            : static_cast<int64_t>(Characters(s.substr(0, hit)).size()));
    }
    if (method == "count") {
      int64_t count = 0;
      const std::string needle = arg0.Str();
      for (size_t hit = s.find(needle); !needle.empty() && hit != std::string::npos;
           hit = s.find(needle, hit + needle.size())) {
        ++count;
      }
      return Value::Int(count);
    }
    if (method == "join") {
      std::string out;
      const Value::List items = Iterate(arg0);
      for (size_t i = 0; i < items.size(); ++i) out += (i ? s : "") + items[i].Str();
      return Value::String(out);
    }
  }
  if (object.is_dict()) {
    if (method == "items") {
      Value::List items;
      for (const auto& [key, value] : object.dict()) {
        items.push_back(Value::MakeList({Value::String(key), value}));
      }
      return Value::MakeList(std::move(items));
    }
    if (method == "keys" || method == "values") {
      Value::List items;
      for (const auto& [key, value] : object.dict()) {
        items.push_back(method == "keys" ? Value::String(key) : value);
      }
      return Value::MakeList(std::move(items));
    }
    if (method == "get") {
      const Value* found = object.Find(args.Get("", 0).Str());
      return found ? *found : args.Get("", 1, Value::None());
    }
  }
  throw TemplateError("unsupported method '" + method + "' on " + object.Repr());
}

Value CallFunction(const std::string& name, const Arguments& args) {
  if (name == "raise_exception") {
    throw TemplateError("template raised an exception: " + args.Get("", 0).Str());
  }
  if (name == "namespace" || name == "dict") {
    Value::Dict items;
    if (!args.positional.empty() && args.positional[0].is_dict()) items = args.positional[0].dict();
    for (const auto& [key, value] : args.keyword) items.emplace_back(key, value);
    return Value::MakeDict(std::move(items), name == "namespace");
  }
  if (name == "range") {
    int64_t start = 0, stop, step = 1;
    if (args.positional.size() == 1) {
      stop = args.positional[0].integer();
    } else if (args.positional.size() >= 2) {
      start = args.positional[0].integer();
      stop = args.positional[1].integer();
      if (args.positional.size() == 3) step = args.positional[2].integer();
    } else {
      throw TemplateError("range() needs 1 to 3 arguments");
    }
    if (step == 0) throw TemplateError("range() step cannot be zero");
    // Counted in 128 bits: stop - start and start + k * step may not fit in int64.
    const __int128 span = step > 0 ? __int128{stop} - start : __int128{start} - stop;
    const __int128 stride = step > 0 ? __int128{step} : -__int128{step};
    const __int128 count = span <= 0 ? 0 : (span + stride - 1) / stride;
    if (count > kMaxRangeItems) {
      throw TemplateError("range() of more than " + std::to_string(kMaxRangeItems) + " items");
    }
    Value::List items;
    for (int64_t k = 0; k < count; ++k) {
      items.push_back(Value::Int(static_cast<int64_t>(start + __int128{k} * step)));
    }
    return Value::MakeList(std::move(items));
  }
  if (name == "strftime_now") {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buffer[256];
    const size_t n = std::strftime(buffer, sizeof(buffer), args.Get("", 0).Str().c_str(), &local);
    return Value::String(std::string(buffer, n));
  }
  throw TemplateError("unsupported function '" + name + "()'");
}

Value ApplyFilter(const std::string& name, const Value& value, const Arguments& args) {
  if (name == "trim") {
    const Value chars = args.Get("chars", 0);
    return Value::String(Strip(value.Str(), chars.is_string() ? &chars.string() : nullptr, true, true));
  }
  if (name == "length" || name == "count") return Value::Int(Length(value));
  if (name == "tojson") {
    const Value indent = args.Get("indent", 0);
    return Value::String(value.ToJson(indent.is_number() ? static_cast<int>(indent.integer()) : 0));
  }
  if (name == "string") return Value::String(value.Str());
  if (name == "upper") return Value::String(MapAscii(value.Str(), std::toupper));
  if (name == "lower") return Value::String(MapAscii(value.Str(), std::tolower));
  if (name == "capitalize") {
    std::string s = MapAscii(value.Str(), std::tolower);
    if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    return Value::String(s);
  }
  if (name == "replace") {
    return Value::String(Replace(value.Str(), args.Get("", 0).Str(), args.Get("", 1).Str()));
  }
  if (name == "default" || name == "d") {
    const bool boolean = args.Get("boolean", 1, Value::Bool(false)).Truthy();
    const bool use_default = value.is_undefined() || (boolean && !value.Truthy());
    return use_default ? args.Get("default_value", 0, Value::String("")) : value;
  }
  if (name == "first" || name == "last") {
    const Value::List items = Iterate(value);
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    const std::string separator = args.Get("d", 0, Value::String("")).Str();
    std::string out;
    const Value::List items = Iterate(value);
    for (size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i].Str();
    return Value::String(out);
  }
  if (name == "list") return Value::MakeList(Iterate(value));
  if (name == "reverse") return Slice(value, Value(), Value(), Value::Int(-1));
  if (name == "items") return CallMethod(value, "items", {});
  if (name == "int") {
    if (value.kind() == Value::Kind::kInt) return value;
    if (value.is_number()) {
      // Casting a double outside int64 is undefined behaviour; Python's int() has no bound.
      const double x = value.number();
      if (!(std::fabs(x) < 9.2e18)) throw TemplateError("int: " + value.Str() + " is out of range");
      return Value::Int(static_cast<int64_t>(x));
    }
    try {
      return Value::Int(std::stoll(value.Str()));
    } catch (const std::exception&) {
      return Value::Int(0);
    }
  }
  if (name == "safe") return value;
  throw TemplateError("unsupported filter '" + name + "'");
}

bool ApplyTest(const std::string& name, const Value& value, const Arguments& args) {
  if (name == "defined") return !value.is_undefined();
  if (name == "undefined") return value.is_undefined();
  if (name == "none") return value.is_none();
  if (name == "string") return value.is_string();
  if (name == "number") return value.is_number();
  if (name == "integer") return value.kind() == Value::Kind::kInt;
  if (name == "float") return value.kind() == Value::Kind::kFloat;
  if (name == "boolean") return value.kind() == Value::Kind::kBool;
  if (name == "true") return value.kind() == Value::Kind::kBool && value.boolean();
  if (name == "false") return value.kind() == Value::Kind::kBool && !value.boolean();
  if (name == "mapping") return value.is_dict();
  if (name == "sequence") return value.is_list() || value.is_string() || value.is_dict();
  if (name == "iterable") return value.is_list() || value.is_string() || value.is_dict();
  if (name == "odd" || name == "even") {
    if (value.kind() != Value::Kind::kInt) throw TemplateError("'" + name + "' test on a non-integer");
    return (value.integer() % 2 != 0) == (name == "odd");
  }
  if (name == "equalto" || name == "eq" || name == "sameas") return value.Equals(args.Get("", 0));
  throw TemplateError("unsupported test '" + name + "'");
}

}  // namespace loraserve::tokenizer::jinja
