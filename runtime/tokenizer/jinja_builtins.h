// The functions, methods, filters and tests chat templates call: Python str/dict methods,
// Jinja filters (trim, length, tojson, ...), tests (defined, none, string, ...) and the globals
// transformers provides (raise_exception, namespace, range, strftime_now).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tokenizer/jinja_value.h"

namespace loraserve::tokenizer::jinja {

// Bounds on what one expression may build (`'x' * n`, range(n)), so that a template fails with
// an error instead of exhausting memory. Real chat templates stay far below both.
inline constexpr int64_t kMaxStringBytes = 1 << 24;
inline constexpr int64_t kMaxRangeItems = 1 << 20;

struct Arguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument called `name`, else positional `index`, else `fallback`.
  Value Get(const std::string& name, size_t index, Value fallback = Value()) const;
};

// Items a for-loop or `in` sees: list elements, dict keys or string characters.
Value::List Iterate(const Value& v);
// Python slicing of lists and strings; undefined bounds mean "omitted".
Value Slice(const Value& v, const Value& start, const Value& stop, const Value& step);

Value CallMethod(const Value& object, const std::string& method, const Arguments& args);
Value CallFunction(const std::string& name, const Arguments& args);
Value ApplyFilter(const std::string& name, const Value& value, const Arguments& args);
bool ApplyTest(const std::string& name, const Value& value, const Arguments& args);

}  // namespace loraserve::tokenizer::jinja
