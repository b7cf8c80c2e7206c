// Field semantics follow peft 0.13.2: LoraConfig (tuners/lora/config.py), target matching
// (tuners/tuners_utils.py check_target_module_exists) and per-module rank/alpha
// (tuners/lora/model.py _create_and_replace). Patterns use std::regex (ECMAScript), which agrees
// with Python's `re` on the syntax adapters use (literals, `.`, classes, `|`, groups, `\d`).
#include "adapters/peft_config.h"

#include <charconv>
#include <cmath>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "formats/model_config.h"

namespace loraserve {
namespace {

// Ordered: rank_pattern/alpha_pattern lookups depend on the key order in the file.
using json = nlohmann::ordered_json;

// Options that never change the forward pass of a loaded adapter (training-time settings and
// bookkeeping); any value is accepted.
const std::set<std::string, std::less<>> kInertOptions = {"base_model_name_or_path",
                                                          "revision",
                                                          "inference_mode",
                                                          "lora_dropout",
                                                          "auto_mapping",
                                                          "megatron_core",
                                                          "loftq_config",
                                                          "runtime_config",
                                                          "eva_config",
                                                          "corda_config",
                                                          "qalora_group_size",
                                                          "ensure_weight_tying",
                                                          "peft_version",
                                                          "task_type"};

// A value an unknown option may hold without changing semantics: PEFT's defaults are all of
// this shape (None, False, [], {}, "").
bool IsDefaultLike(const json& value) {
  return value.is_null() || (value.is_boolean() && !value.get<bool>()) ||
         (value.is_array() && value.empty()) || (value.is_object() && value.empty()) ||
         (value.is_string() && value.get<std::string>().empty());
}

// Patterns come from uploads, so matching them must not backtrack exponentially (the DFS
// executor took minutes on `(s2****...|||...)` against a 30-byte module key). libstdc++'s
// __polynomial flag selects its breadth-first executor, linear in the text for a given pattern;
// it refuses back-references, which module patterns do not need.
constexpr std::regex::flag_type kRegexFlags =
    std::regex::ECMAScript | std::regex_constants::__polynomial;
// The breadth-first executor recurses once per state of the compiled automaton, and counts copy
// states, so both are bounded. libstdc++'s compiler also overflows a signed long (undefined
// behaviour) on a repetition count or back-reference of 19 or more digits.
constexpr size_t kMaxRegexBytes = 1024;
constexpr int kMaxRegexNumber = 1000;

// The first number above kMaxRegexNumber in a `{m,n}` or after a backslash, if any.
std::optional<std::string> HugeRegexNumber(std::string_view pattern) {
  bool in_braces = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    bool number_here = in_braces;
    if (pattern[i] == '\\') {
      ++i;  // a back-reference \N, or any other escape
      number_here = true;
    } else if (pattern[i] == '{' || pattern[i] == '}') {
      in_braces = pattern[i] == '{';
      continue;
    }
    if (!number_here) continue;
    size_t end = i;
    while (end < pattern.size() && pattern[end] >= '0' && pattern[end] <= '9') ++end;
    if (end == i) continue;
    const std::string number(pattern.substr(i, end - i));
    if (number.size() > 6 || std::stoi(number) > kMaxRegexNumber) return number;
    i = end - 1;
  }
  return std::nullopt;
}

absl::StatusOr<std::regex> CompileRegex(const std::string& pattern, const std::string& label,
                                        absl::string_view field) {
  if (pattern.size() > kMaxRegexBytes) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": field \"", field, "\": a pattern of ",
                                                   pattern.size(), " bytes is longer than ",
                                                   kMaxRegexBytes, " bytes"));
  }
  if (std::optional<std::string> number = HugeRegexNumber(pattern)) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": field \"", field, "\": pattern \"", pattern, "\" has the number ", *number,
        " as a repetition count or back-reference; at most ", kMaxRegexNumber, " is supported"));
  }
  try {
    return std::regex(pattern, kRegexFlags);
  } catch (const std::regex_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": field \"", field, "\": pattern \"", pattern,
        "\" is not a valid regular expression here (loraserve supports the common subset of "
        "Python `re` syntax: no named groups, lookbehind or back-references): ",
        e.what()));
  }
}

bool SearchFromStart(const std::string& text, const std::regex& re, std::smatch* match) {
  try {
    return std::regex_search(text, *match, re, std::regex_constants::match_continuous);
  } catch (const std::regex_error&) {
    return false;  // only complexity limits can throw here; such a pattern matches nothing
  }
}

class ConfigParser {
 public:
  ConfigParser(const json& root, std::string label) : root_(root), label_(std::move(label)) {}

  absl::StatusOr<PeftConfig> Parse() {
    PeftConfig c;
    std::set<std::string, std::less<>> handled;
    auto take = [&](const char* field) -> const json* {
      handled.insert(field);
      auto it = root_.find(field);
      return it == root_.end() ? nullptr : &*it;
    };

    const json* peft_type = take("peft_type");
    if (peft_type == nullptr || !peft_type->is_string() ||
        peft_type->get<std::string>() != "LORA") {
      return Error("peft_type",
                   absl::StrCat("is ", peft_type == nullptr ? "missing" : peft_type->dump(),
                                "; only LoRA adapters (\"LORA\") are supported"));
    }
    if (const json* v = take("r"); v != nullptr && !v->is_null()) {
      if (!v->is_number_integer() || v->get<int64_t>() <= 0 || v->get<int64_t>() > (1 << 20)) {
        return Error("r", absl::StrCat("must be a positive integer, got ", v->dump()));
      }
      c.r = v->get<int>();
    }
    if (const json* v = take("lora_alpha"); v != nullptr && !v->is_null()) {
      if (!v->is_number() || !std::isfinite(v->get<double>())) {
        return Error("lora_alpha", absl::StrCat("must be a finite number, got ", v->dump()));
      }
      c.lora_alpha = v->get<double>();
    }
    if (absl::Status s = ParseTargets(take("target_modules"), c); !s.ok()) return s;
    for (auto [field, out] :
         {std::pair{"use_rslora", &c.use_rslora}, std::pair{"use_dora", &c.use_dora}}) {
      const json* v = take(field);
      if (v == nullptr || v->is_null()) continue;
      if (!v->is_boolean()) return Error(field, absl::StrCat("must be a boolean, got ", v->dump()));
      *out = v->get<bool>();
    }
    if (absl::Status s = ParsePattern(take("rank_pattern"), "rank_pattern", true, c.rank_pattern);
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            ParsePattern(take("alpha_pattern"), "alpha_pattern", false, c.alpha_pattern);
        !s.ok()) {
      return s;
    }
    if (const json* v = take("bias"); v != nullptr && !v->is_null()) {
      if (!v->is_string() || (v->get<std::string>() != "none" && v->get<std::string>() != "all" &&
                              v->get<std::string>() != "lora_only")) {
        return Error("bias",
                     absl::StrCat("must be \"none\", \"all\" or \"lora_only\", got ", v->dump()));
      }
      c.bias = v->get<std::string>();
    }
    if (absl::Status s = ParseLayers(take("layers_to_transform"), take("layers_pattern"), c);
        !s.ok()) {
      return s;
    }
    if (const json* v = take("fan_in_fan_out"); v != nullptr && !v->is_null()) {
      if (!v->is_boolean()) return Error("fan_in_fan_out", "must be a boolean");
      if (v->get<bool>()) {
        return Error("fan_in_fan_out",
                     "is true (GPT-2 style Conv1D weights stored in x out); Llama-family models "
                     "use nn.Linear (out x in), so this adapter was trained for another "
                     "architecture");
      }
    }
    if (const json* v = take("modules_to_save"); v != nullptr && !v->is_null()) {
      if (!IsStringList(*v)) return Error("modules_to_save", "must be a list of strings or null");
      c.modules_to_save = v->get<std::vector<std::string>>();
    }
    if (const json* v = take("init_lora_weights"); v != nullptr && v->is_string()) {
      const std::string init = v->get<std::string>();
      if (absl::StartsWith(init, "pissa") || init == "olora" || init == "corda" ||
          init == "loftq") {
        return Error("init_lora_weights",
                     absl::StrCat("is \"", init,
                                  "\": this initialisation rewrites the base weights, so the "
                                  "adapter only works on that modified base. Convert it to a "
                                  "plain LoRA (PEFT save_pretrained with "
                                  "path_initial_model_for_weight_conversion) and upload that"));
      }
    }
    for (const char* field : {"layer_replication", "megatron_config"}) {
      const json* v = take(field);
      if (v != nullptr && !IsDefaultLike(*v)) {
        return Error(field, absl::StrCat("= ", v->dump(), " is not supported by loraserve"));
      }
    }
    if (auto it = root_.find("task_type"); it != root_.end() && it->is_string()) {
      c.task_type = it->get<std::string>();
    }
    if (auto it = root_.find("base_model_name_or_path"); it != root_.end() && it->is_string()) {
      c.base_model_name_or_path = it->get<std::string>();
    }
    for (auto it = root_.begin(); it != root_.end(); ++it) {
      if (handled.contains(it.key()) || kInertOptions.contains(it.key())) continue;
      if (!IsDefaultLike(it.value())) {
        return Error(it.key(),
                     absl::StrCat("= ", it.value().dump(),
                                  " is not supported by loraserve (this option changes how the "
                                  "adapter is applied); retrain or export without it"));
      }
    }
    return c;
  }

 private:
  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": field \"", field, "\" ", what));
  }

  static bool IsStringList(const json& v) {
    if (!v.is_array()) return false;
    for (const json& item : v) {
      if (!item.is_string()) return false;
    }
    return true;
  }

  absl::Status ParseTargets(const json* v, PeftConfig& c) const {
    if (v == nullptr || v->is_null()) {
      return Error("target_modules",
                   "is missing; name the LoRA target modules, e.g. [\"q_proj\", \"v_proj\"]");
    }
    if (v->is_string()) {
      const std::string pattern = v->get<std::string>();
      if (pattern == "all-linear") {
        // PEFT expands this to every linear layer but the output head.
        c.target_list.assign(kModuleNames.begin(), kModuleNames.end());
        return absl::OkStatus();
      }
      absl::StatusOr<std::regex> re = CompileRegex(pattern, label_, "target_modules");
      if (!re.ok()) return re.status();
      c.target_regex = pattern;
      c.target_regex_compiled = *std::move(re);
      return absl::OkStatus();
    }
    if (!IsStringList(*v) || v->empty()) {
      return Error("target_modules", "must be a non-empty list of module names or a regex string");
    }
    c.target_list = v->get<std::vector<std::string>>();
    return absl::OkStatus();
  }

  absl::Status ParsePattern(const json* v, absl::string_view field, bool integer,
                            std::vector<PeftPatternEntry>& out) const {
    if (v == nullptr || v->is_null()) return absl::OkStatus();
    if (!v->is_object()) return Error(field, "must be an object {pattern: value}");
    for (auto it = v->begin(); it != v->end(); ++it) {
      const json& value = it.value();
      const bool ok = integer ? value.is_number_integer() && value.get<int64_t>() > 0 &&
                                    value.get<int64_t>() <= (1 << 20)
                              : value.is_number() && std::isfinite(value.get<double>());
      if (!ok) {
        return Error(field, absl::StrCat("entry \"", it.key(), "\" must be ",
                                         integer ? "a positive integer" : "a finite number",
                                         ", got ", value.dump()));
      }
      absl::StatusOr<std::regex> re =
          CompileRegex(absl::StrCat(".*\\.", it.key(), "$"), label_, field);
      if (!re.ok()) return re.status();
      out.push_back({it.key(), *std::move(re), value.get<double>()});
    }
    return absl::OkStatus();
  }

  absl::Status ParseLayers(const json* layers, const json* pattern, PeftConfig& c) const {
    if (layers != nullptr && !layers->is_null()) {
      std::vector<int> indices;
      if (layers->is_number_integer()) {
        indices.push_back(layers->get<int>());
      } else if (layers->is_array()) {
        for (const json& item : *layers) {
          if (!item.is_number_integer()) {
            return Error("layers_to_transform", "must be an integer or a list of integers");
          }
          indices.push_back(item.get<int>());
        }
      } else {
        return Error("layers_to_transform", "must be an integer or a list of integers");
      }
      for (int index : indices) {
        if (index < 0) {
          return Error("layers_to_transform", absl::StrCat("has negative layer index ", index));
        }
      }
      c.layers_to_transform = std::move(indices);
    }
    if (pattern != nullptr && !pattern->is_null()) {
      if (pattern->is_string()) {
        c.layers_pattern = {pattern->get<std::string>()};
      } else if (IsStringList(*pattern)) {
        c.layers_pattern = pattern->get<std::vector<std::string>>();
      } else {
        return Error("layers_pattern", "must be a string or a list of strings");
      }
      for (const std::string& p : c.layers_pattern) {
        absl::StatusOr<std::regex> re = CompileRegex(p, label_, "layers_pattern");
        if (!re.ok()) return re.status();
        re = CompileRegex(absl::StrCat(".*\\.", p, "\\.(\\d+)\\."), label_, "layers_pattern");
        if (!re.ok()) return re.status();
        // PEFT reads the layer index from group 1, so the pattern may not add groups.
        if (re->mark_count() != 1) {
          return Error("layers_pattern",
                       absl::StrCat("entry \"", p,
                                    "\" has a capturing group; PEFT reads the layer index from "
                                    "the first group, so use (?:...)"));
        }
        c.layers_pattern_compiled.push_back(*std::move(re));
      }
    }
    return absl::OkStatus();
  }

  const json& root_;
  std::string label_;
};

}  // namespace

bool PeftConfig::TargetsModule(std::string_view module_key) const {
  const std::string key(module_key);
  if (target_regex_compiled.has_value()) {
    try {
      return std::regex_match(key, *target_regex_compiled);
    } catch (const std::regex_error&) {
      return false;
    }
  }
  for (const std::string& entry : target_list) {
    if (entry == key) return true;  // an exact key skips the layer filter, as in PEFT
  }
  bool found = false;
  for (const std::string& entry : target_list) {
    if (absl::EndsWith(key, absl::StrCat(".", entry))) found = true;
  }
  if (!found || !layers_to_transform.has_value() || layers_to_transform->empty()) return found;

  std::smatch match;
  bool have_index = false;
  if (layers_pattern.empty()) {
    static const std::regex kAnyLayer(R"(.*\.[^.]*\.(\d+)\.)");
    have_index = SearchFromStart(key, kAnyLayer, &match);
  } else {
    for (const std::regex& re : layers_pattern_compiled) {
      if (SearchFromStart(key, re, &match)) {
        have_index = true;
        break;
      }
    }
  }
  if (!have_index) return false;
  int index = -1;
  const std::string digits = match[1].str();
  if (std::from_chars(digits.data(), digits.data() + digits.size(), index).ec != std::errc()) {
    return false;  // not a layer index this model can have
  }
  for (int wanted : *layers_to_transform) {
    if (wanted == index) return true;
  }
  return false;
}

PeftModuleHyper PeftConfig::HyperFor(std::string_view module_key) const {
  const std::string key(module_key);
  // The first matching pattern key, searched over rank_pattern then alpha_pattern, is then
  // looked up in both maps by name: exactly PEFT's (quirky) rule.
  const std::string* chosen = nullptr;
  std::smatch match;
  for (const auto* patterns : {&rank_pattern, &alpha_pattern}) {
    for (const PeftPatternEntry& entry : *patterns) {
      if (SearchFromStart(key, entry.regex, &match)) {
        chosen = &entry.key;
        break;
      }
    }
    if (chosen != nullptr) break;
  }
  PeftModuleHyper hyper{r, lora_alpha};
  if (chosen == nullptr) return hyper;
  for (const PeftPatternEntry& entry : rank_pattern) {
    if (entry.key == *chosen) hyper.rank = static_cast<int>(entry.value);
  }
  for (const PeftPatternEntry& entry : alpha_pattern) {
    if (entry.key == *chosen) hyper.alpha = entry.value;
  }
  return hyper;
}

double PeftConfig::ScalingFor(const PeftModuleHyper& hyper) const {
  return use_rslora ? hyper.alpha / std::sqrt(static_cast<double>(hyper.rank))
                    : hyper.alpha / hyper.rank;
}

absl::StatusOr<PeftConfig> ParsePeftConfig(std::string_view json_text, std::string_view label) {
  json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(label), ": not a JSON object (expected a PEFT adapter_config.json)"));
  }
  return ConfigParser(root, std::string(label)).Parse();
}

}  // namespace loraserve
