// The plan of one engine step as plain data: which tokens run, where their KV lives, which
// rows need logits and the step's LoRA plan. The scheduler and plan builder fill it; the model
// executes it through a backend and knows nothing of requests.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/plan/lora_plan.h"

namespace loraserve {

struct SequencePlan {
  int token_begin = 0;  // rows [token_begin, token_end) of the step
  int token_end = 0;
  std::vector<int32_t> block_table;  // KV pages covering positions [0, last position]
  int adapter_set = -1;              // index into the step's adapter sets, -1 = base model
};

struct BatchPlan {
  std::vector<int32_t> token_ids;
  std::vector<int32_t> positions;
  std::vector<SequencePlan> seqs;
  std::vector<int32_t> logit_rows;  // rows whose next-token logits are computed, in order
  kernels::LoraPlan lora;           // BuildLoraPlan; offsets index the pool Forward is given

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
};

}  // namespace loraserve
