// adapter_config.json of a PEFT LoRA adapter, reduced to what changes the math, with PEFT's own
// rules for which modules an adapter targets and which rank/alpha each module gets. Options
// loraserve cannot honour are rejected at parse time, naming the option, rather than ignored.
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace loraserve {

// One rank_pattern / alpha_pattern entry. PEFT matches `re.match(rf".*\.{key}$", module_key)`.
struct PeftPatternEntry {
  std::string key;
  std::regex regex;  // compiled ".*\." + key + "$", matched from the start of the module key
  double value = 0;
};

struct PeftModuleHyper {
  int rank = 0;
  double alpha = 0;
};

struct PeftConfig {
  int r = 8;
  double lora_alpha = 8;
  // target_modules: either a regex (full match against the module key) or a list of names (a
  // key matches an entry it equals or ends with "." + entry).
  std::optional<std::string> target_regex;
  std::optional<std::regex> target_regex_compiled;
  std::vector<std::string> target_list;
  bool use_rslora = false;
  bool use_dora = false;
  // In file order: PEFT takes the first matching key over rank_pattern then alpha_pattern.
  std::vector<PeftPatternEntry> rank_pattern;
  std::vector<PeftPatternEntry> alpha_pattern;
  std::string bias = "none";                            // "none", "all" or "lora_only"
  std::optional<std::vector<int>> layers_to_transform;  // nullopt or empty: every layer
  std::vector<std::string> layers_pattern;
  // PEFT's layer-index regexes, ".*\." + pattern + "\.(\d+)\.", one per layers_pattern entry.
  std::vector<std::regex> layers_pattern_compiled;
  std::vector<std::string> modules_to_save;
  std::string task_type;
  std::string base_model_name_or_path;

  // PEFT's check_target_module_exists for a module key such as "model.layers.3.mlp.up_proj".
  bool TargetsModule(std::string_view module_key) const;
  // PEFT's _create_and_replace: the rank and alpha a targeted module is created with.
  PeftModuleHyper HyperFor(std::string_view module_key) const;
  // alpha / r, or alpha / sqrt(r) with rsLoRA.
  double ScalingFor(const PeftModuleHyper& hyper) const;
};

// Parses and validates the JSON text; `label` (usually the file path) prefixes every error.
absl::StatusOr<PeftConfig> ParsePeftConfig(std::string_view json_text, std::string_view label);

}  // namespace loraserve
