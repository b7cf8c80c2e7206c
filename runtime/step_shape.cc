#include "runtime/step_shape.h"

#include <algorithm>

namespace loraserve {

StepShape ShapeOf(const BatchPlan& plan) {
  StepShape shape;
  shape.rows = plan.num_tokens();
  shape.decode_only = !plan.seqs.empty();
  for (const SequencePlan& seq : plan.seqs) {
    if (seq.token_end - seq.token_begin != 1) shape.decode_only = false;
    shape.max_blocks = std::max(shape.max_blocks, static_cast<int>(seq.block_table.size()));
  }
  const kernels::LoraPlan& lora = plan.lora;
  if (!lora.module_begin.empty()) {
    for (size_t i = 0; i + 1 < lora.module_begin.size(); ++i) {
      int rank_rows = 0;
      for (int s = lora.module_begin[i]; s < lora.module_begin[i + 1]; ++s) {
        const kernels::LoraSegment& segment = lora.segments[s];
        if (segment.out_scale != nullptr) shape.has_dora = true;
        int segment_ranks = 0;
        for (int r = segment.refs_begin; r < segment.refs_end; ++r) {
          segment_ranks += lora.refs[r].rank;
        }
        rank_rows += segment_ranks;
        shape.lora_segment_ranks = std::max(shape.lora_segment_ranks, segment_ranks);
      }
      shape.lora_rank_rows = std::max(shape.lora_rank_rows, rank_rows);
    }
  }
  return shape;
}

BatchPlan PadPlan(const BatchPlan& plan, int rows) {
  BatchPlan padded = plan;
  for (int r = plan.num_tokens(); r < rows; ++r) {
    padded.token_ids.push_back(0);
    padded.positions.push_back(0);
    padded.logit_rows.push_back(r);
  }
  return padded;
}

}  // namespace loraserve
