// Rules for a request's adapter set (weighted fusion at request time), shared by the engine
// and the in-process CLI: weights finite and non-zero, no duplicates, DoRA only alone at 1.0
// (a weighted DoRA combination has no PEFT equivalent: its norm is not linear in the deltas).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "adapters/lora_adapter.h"

namespace loraserve {

using WeightedAdapters = std::vector<std::pair<std::shared_ptr<const LoraAdapter>, float>>;

// One member of a set as admission sees it (before the adapter's weights are in memory).
struct AdapterChoice {
  std::string id;
  bool use_dora = false;
  float weight = 1.0f;
};

absl::Status ValidateAdapterChoices(std::span<const AdapterChoice> set);
absl::Status ValidateAdapterSet(const WeightedAdapters& set);

}  // namespace loraserve
