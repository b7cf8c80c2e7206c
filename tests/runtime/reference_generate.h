// The tests' oracle for engine generation: one request, prefill in one forward pass, then one
// token per pass over a private KV pool, with no scheduler, batching or merging in the way.
#pragma once

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/llama_model.h"
#include "runtime/lora_plan_builder.h"
#include "runtime/page_pool.h"
#include "runtime/sampler.h"

namespace loraserve::testing {

inline absl::StatusOr<std::vector<int32_t>> ReferenceGenerate(const LlamaModel& model,
                                                              std::span<const int32_t> prompt,
                                                              int max_tokens,
                                                              SamplingParams sampling = {}) {
  const int block_size = 16;
  const auto layout = model.KvLayout(block_size);
  const int total = static_cast<int>(prompt.size()) + max_tokens;
  const int32_t num_pages = (total + block_size - 1) / block_size;
  auto kv = model.backend().CreatePool(layout.page_floats(), num_pages);
  if (!kv.ok()) return kv.status();
  PagePool pages(layout.page_floats(), num_pages);
  const std::vector<int32_t> block_table = *pages.Allocate(num_pages);
  Sampler sampler(sampling);
  std::vector<float> logits(model.config().vocab_size);
  std::vector<int32_t> generated;
  std::vector<int32_t> step_tokens(prompt.begin(), prompt.end());
  int position = 0;
  while (static_cast<int>(generated.size()) < max_tokens) {
    BatchPlan plan;
    plan.token_ids = step_tokens;
    for (size_t i = 0; i < step_tokens.size(); ++i) plan.positions.push_back(position + i);
    plan.seqs.push_back({0, static_cast<int>(step_tokens.size()), block_table, -1});
    plan.logit_rows.push_back(plan.num_tokens() - 1);
    if (auto s = model.Forward(plan, **kv, **kv, layout, logits.data()); !s.ok()) return s;
    position += plan.num_tokens();
    generated.push_back(sampler.Sample(logits));
    step_tokens = {generated.back()};
  }
  return generated;
}

}  // namespace loraserve::testing
