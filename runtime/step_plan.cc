#include "runtime/step_plan.h"

#include <algorithm>
#include <map>

#include "runtime/lora_plan_builder.h"

namespace loraserve {

absl::StatusOr<StepPlan> BuildStepPlan(const std::vector<ScheduledSequence>& scheduled_sequences,
                                       const std::string& merged_key, int num_layers) {
  StepPlan step;
  std::vector<ScheduledSequence> sequences = scheduled_sequences;
  std::stable_sort(sequences.begin(), sequences.end(), [](const auto& a, const auto& b) {
    return a.request->set_key < b.request->set_key;
  });
  BatchPlan& plan = step.plan;
  std::vector<AdapterSetView> sets;
  std::map<std::string, int> set_index;
  for (const ScheduledSequence& scheduled : sequences) {
    RequestState* r = scheduled.request;
    SequencePlan seq;
    seq.token_begin = plan.num_tokens();
    for (int i = 0; i < scheduled.tokens; ++i) {
      plan.token_ids.push_back(r->tokens[r->num_computed + i]);
      plan.positions.push_back(r->num_computed + i);
    }
    seq.token_end = plan.num_tokens();
    seq.block_table = r->pages;
    const bool merged_here = !merged_key.empty() && r->pool_keys.size() == 1 &&
                             r->pool_keys[0] == merged_key && r->adapters[0].second == 1.0f;
    if (!r->adapters.empty() && !merged_here) {
      auto [it, inserted] = set_index.emplace(r->set_key, static_cast<int>(sets.size()));
      if (inserted) {
        AdapterSetView view;
        for (size_t i = 0; i < r->resident.size(); ++i) {
          view.emplace_back(r->resident[i], r->adapters[i].second);
        }
        sets.push_back(std::move(view));
      }
      seq.adapter_set = it->second;
    }
    if (r->num_computed + scheduled.tokens == static_cast<int>(r->tokens.size())) {
      step.sampled.emplace_back(r, static_cast<int>(plan.logit_rows.size()));
      plan.logit_rows.push_back(seq.token_end - 1);
    }
    plan.seqs.push_back(std::move(seq));
  }
  auto lora = BuildLoraPlan(plan.seqs, sets, num_layers);
  if (!lora.ok()) return lora.status();
  plan.lora = std::move(*lora);
  return step;
}

}  // namespace loraserve
