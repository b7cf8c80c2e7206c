// Rules for a request's adapter set (weighted fusion at request time), shared by the engine
// and the in-process CLI: weights finite and non-zero, no duplicates, DoRA only alone at 1.0
// (a weighted DoRA combination has no PEFT equivalent: its norm is not linear in the deltas).
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "adapters/lora_adapter.h"

namespace loraserve {

using WeightedAdapters = std::vector<std::pair<std::shared_ptr<const LoraAdapter>, float>>;

absl::Status ValidateAdapterSet(const WeightedAdapters& set);

}  // namespace loraserve
