// Turns the scheduler's batch into the step's BatchPlan: sequences sharing an adapter set sit
// next to each other (one LoRA segment each), requests served by the merged adapter run as
// base rows, the LoRA plan is built once, and rows that finish a prompt or decode are sampled.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/batch_plan.h"
#include "runtime/scheduler.h"

namespace loraserve {

struct StepPlan {
  BatchPlan plan;
  std::vector<std::pair<RequestState*, int>> sampled;  // request, index into plan.logit_rows
};

// `merged_key`: the pool key merged into the base weights now ("" = none).
absl::StatusOr<StepPlan> BuildStepPlan(const std::vector<ScheduledSequence>& sequences,
                                       const std::string& merged_key, int num_layers);

}  // namespace loraserve
