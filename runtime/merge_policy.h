// When to merge: single-adapter traffic sustained for a window merges (hysteresis against
// thrashing), any other traffic unmerges, idle keeps what is merged. Reads time from an
// injected clock so tests drive it without sleeping. Also accounts time spent in each mode.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "runtime/engine_stats.h"

namespace loraserve {

class MergePolicy {
 public:
  using Clock = std::chrono::steady_clock;
  using NowFn = std::function<Clock::time_point()>;

  explicit MergePolicy(NowFn now = [] { return Clock::now(); }) : now_(std::move(now)) {}

  // Called once per step. `single_adapter`: the pool key every active request uses alone at
  // weight 1 (nullopt when traffic is mixed, base-only or absent); `merged_id`: what is merged
  // now ("" = nothing). Returns the pool key that should be merged for this step ("" = none).
  std::string Decide(MergeMode mode, const std::string& forced_id,
                     const std::optional<std::string>& single_adapter, bool idle,
                     Clock::duration window, const std::string& merged_id);

  // Accounts the time since the last call to the mode the weights were in during it.
  void Tick(bool merged);
  double seconds_merged() const { return seconds_merged_; }
  double seconds_unmerged() const { return seconds_unmerged_; }

 private:
  NowFn now_;
  std::optional<std::string> candidate_;
  Clock::time_point candidate_since_;
  std::optional<Clock::time_point> last_tick_;
  double seconds_merged_ = 0;
  double seconds_unmerged_ = 0;
};

}  // namespace loraserve
