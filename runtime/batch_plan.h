// The plan of one engine step as plain data: which tokens run, where their KV lives, which
// rows need logits and which adapter set each sequence uses. The scheduler builds it; the model
// executes it and knows nothing of requests.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/resident_adapter.h"

namespace loraserve {

struct SequencePlan {
  int token_begin = 0;  // rows [token_begin, token_end) of the step
  int token_end = 0;
  std::vector<int32_t> block_table;  // KV pages covering positions [0, last position]
  int adapter_set = -1;              // index into BatchPlan::adapter_sets, -1 = base model
};

struct BatchPlan {
  std::vector<int32_t> token_ids;
  std::vector<int32_t> positions;
  std::vector<SequencePlan> seqs;
  std::vector<int32_t> logit_rows;  // rows whose next-token logits are computed, in order
  std::vector<AdapterSetView> adapter_sets;
  const float* adapter_pool = nullptr;  // base of the float pool the ResidentLora offsets index

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
};

}  // namespace loraserve
