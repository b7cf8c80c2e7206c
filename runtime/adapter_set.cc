#include "runtime/adapter_set.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"

namespace loraserve {

absl::Status ValidateAdapterSet(const WeightedAdapters& set) {
  std::vector<AdapterChoice> choices;
  for (const auto& [adapter, weight] : set) {
    choices.push_back({adapter->id, adapter->use_dora, weight});
  }
  return ValidateAdapterChoices(choices);
}

absl::Status ValidateAdapterChoices(std::span<const AdapterChoice> set) {
  std::set<std::string> seen;
  for (size_t i = 0; i < set.size(); ++i) {
    const auto& [id, use_dora, weight] = set[i];
    if (!std::isfinite(weight) || weight == 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapters[", i, "].weight must be finite and non-zero, got ", weight));
    }
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapters[", i, "].adapter_id: '", id, "' appears twice"));
    }
    if (use_dora && (set.size() > 1 || weight != 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapters[", i, "]: DoRA adapter '", id,
          "' can only be used alone with weight 1 (weighted DoRA fusion is not defined)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace loraserve
