#include "runtime/merge_policy.h"

namespace loraserve {

std::string MergePolicy::Decide(MergeMode mode, const std::string& forced_id,
                                const std::optional<std::string>& single_adapter, bool idle,
                                Clock::duration window, const std::string& merged_id) {
  if (mode == MergeMode::kNever) return "";
  if (idle) return merged_id;  // nothing runs: keep whatever is merged, no churn
  if (!single_adapter) {
    candidate_.reset();
    return "";
  }
  if (mode == MergeMode::kForced) return *single_adapter == forced_id ? forced_id : "";
  if (*single_adapter == merged_id) return merged_id;
  const Clock::time_point now = now_();
  if (candidate_ != single_adapter) {
    candidate_ = single_adapter;
    candidate_since_ = now;
  }
  return now - candidate_since_ >= window ? *single_adapter : "";
}

void MergePolicy::Tick(bool merged) {
  const Clock::time_point now = now_();
  if (last_tick_) {
    const double dt = std::chrono::duration<double>(now - *last_tick_).count();
    (merged ? seconds_merged_ : seconds_unmerged_) += dt;
  }
  last_tick_ = now;
}

}  // namespace loraserve
