#include "runtime/adapter_set.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"

namespace loraserve {

absl::Status ValidateAdapterSet(const WeightedAdapters& set) {
  std::set<std::string> seen;
  for (size_t i = 0; i < set.size(); ++i) {
    const auto& [adapter, weight] = set[i];
    if (!std::isfinite(weight) || weight == 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapters[", i, "].weight must be finite and non-zero, got ", weight));
    }
    if (!seen.insert(adapter->id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapters[", i, "].adapter_id: '", adapter->id, "' appears twice"));
    }
    if (adapter->use_dora && (set.size() > 1 || weight != 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapters[", i, "]: DoRA adapter '", adapter->id,
          "' can only be used alone with weight 1 (weighted DoRA fusion is not defined)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace loraserve
