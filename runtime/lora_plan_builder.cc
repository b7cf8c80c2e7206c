#include "runtime/lora_plan_builder.h"

#include "absl/strings/str_cat.h"

namespace loraserve {

absl::StatusOr<kernels::LoraPlan> BuildLoraPlan(std::span<const SequencePlan> seqs,
                                                std::span<const AdapterSetView> sets,
                                                int num_layers) {
  kernels::LoraPlan plan;
  plan.num_layers = num_layers;
  plan.num_modules = kNumModules;
  for (const SequencePlan& seq : seqs) {
    if (seq.adapter_set >= static_cast<int>(sets.size())) {
      return absl::InvalidArgumentError(absl::StrCat("plan: adapter_set ", seq.adapter_set,
                                                     " out of range (", sets.size(), " sets)"));
    }
  }
  if (sets.empty()) return plan;
  // Runs of consecutive sequences (adjacent rows) with the same set, computed once.
  struct Run {
    int row_begin, row_end, set;
  };
  std::vector<Run> runs;
  for (size_t s = 0; s < seqs.size();) {
    const int set = seqs[s].adapter_set;
    size_t e = s;
    while (e < seqs.size() && seqs[e].adapter_set == set &&
           (e == s || seqs[e].token_begin == seqs[e - 1].token_end)) {
      ++e;
    }
    if (set >= 0) runs.push_back({seqs[s].token_begin, seqs[e - 1].token_end, set});
    s = e;
  }
  plan.module_begin.reserve(static_cast<size_t>(num_layers) * kNumModules + 1);
  for (int layer = 0; layer < num_layers; ++layer) {
    for (int m = 0; m < kNumModules; ++m) {
      plan.module_begin.push_back(static_cast<int32_t>(plan.segments.size()));
      for (const Run& run : runs) {
        kernels::LoraSegment segment{run.row_begin, run.row_end,
                                     static_cast<int>(plan.refs.size()), 0, nullptr};
        for (const auto& [adapter, weight] : sets[run.set]) {
          const auto& slot = adapter->modules[layer][m];
          if (!slot) continue;
          plan.refs.push_back({slot->rank, weight * slot->scaling, slot->a_rows.data(),
                               slot->b_cols.data(), slot->dtype});
          if (!slot->dora_scale.empty()) segment.out_scale = slot->dora_scale.data();
        }
        segment.refs_end = static_cast<int>(plan.refs.size());
        if (segment.refs_end > segment.refs_begin || segment.out_scale != nullptr) {
          plan.segments.push_back(segment);
        }
      }
    }
  }
  plan.module_begin.push_back(static_cast<int32_t>(plan.segments.size()));
  return plan;
}

}  // namespace loraserve
