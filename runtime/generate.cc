#include "runtime/generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/page_pool.h"

namespace loraserve {
namespace {

BatchPlan SingleSequencePlan(std::span<const int32_t> tokens, int first_position,
                             const std::vector<int32_t>& block_table,
                             const AdapterContext& adapters) {
  BatchPlan plan;
  plan.token_ids.assign(tokens.begin(), tokens.end());
  for (size_t i = 0; i < tokens.size(); ++i) plan.positions.push_back(first_position + i);
  SequencePlan seq;
  seq.token_begin = 0;
  seq.token_end = static_cast<int>(tokens.size());
  seq.block_table = block_table;
  if (adapters.set != nullptr && !adapters.set->empty()) {
    plan.adapter_sets.push_back(*adapters.set);
    plan.adapter_pool = adapters.pool;
    seq.adapter_set = 0;
  }
  plan.seqs.push_back(std::move(seq));
  return plan;
}

absl::StatusOr<std::vector<int32_t>> Pages(PagePool& pool, int tokens, int block_size) {
  auto pages = pool.Allocate((tokens + block_size - 1) / block_size);
  if (!pages) return absl::ResourceExhaustedError("KV pool too small");
  return *pages;
}

absl::Status CheckPrompt(const LlamaModel& model, std::span<const int32_t> prompt, int extra) {
  if (prompt.empty()) return absl::InvalidArgumentError("prompt: must hold at least one token");
  const int limit = model.config().max_position_embeddings;
  if (static_cast<int>(prompt.size()) + extra > limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("prompt: ", prompt.size(), " tokens + ", extra,
                     " new tokens exceed the model context of ", limit));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<float>> ScorePrompt(const LlamaModel& model,
                                               std::span<const int32_t> prompt,
                                               bool all_positions, const AdapterContext& adapters) {
  if (auto s = CheckPrompt(model, prompt, 0); !s.ok()) return s;
  const int block_size = 16;
  const auto layout = model.KvLayout(block_size);
  const int n = static_cast<int>(prompt.size());
  PagePool pool(layout.page_floats(), (n + block_size - 1) / block_size);
  auto pages = Pages(pool, n, block_size);
  if (!pages.ok()) return pages.status();
  BatchPlan plan = SingleSequencePlan(prompt, 0, *pages, adapters);
  if (all_positions) {
    for (int i = 0; i < n; ++i) plan.logit_rows.push_back(i);
  } else {
    plan.logit_rows.push_back(n - 1);
  }
  std::vector<float> logits(plan.logit_rows.size() * model.config().vocab_size);
  if (auto s = model.Forward(plan, pool.data(), layout, logits.data()); !s.ok()) return s;
  return logits;
}

absl::StatusOr<std::vector<float>> ScoreBatch(const LlamaModel& model,
                                              const std::vector<std::vector<int32_t>>& prompts,
                                              const std::vector<AdapterSetView>& sets,
                                              const float* adapter_pool, bool all_positions) {
  if (sets.size() != prompts.size()) {
    return absl::InvalidArgumentError("ScoreBatch: one adapter set per prompt");
  }
  const int block_size = 16;
  const auto layout = model.KvLayout(block_size);
  int total_pages = 0;
  for (const auto& prompt : prompts) {
    if (auto s = CheckPrompt(model, prompt, 0); !s.ok()) return s;
    total_pages += (static_cast<int>(prompt.size()) + block_size - 1) / block_size;
  }
  PagePool pool(layout.page_floats(), total_pages);
  BatchPlan plan;
  plan.adapter_pool = adapter_pool;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int n = static_cast<int>(prompts[i].size());
    auto pages = Pages(pool, n, block_size);
    if (!pages.ok()) return pages.status();
    SequencePlan seq;
    seq.token_begin = plan.num_tokens();
    for (int p = 0; p < n; ++p) {
      plan.token_ids.push_back(prompts[i][p]);
      plan.positions.push_back(p);
    }
    seq.token_end = plan.num_tokens();
    seq.block_table = *pages;
    if (!sets[i].empty()) {
      seq.adapter_set = static_cast<int>(plan.adapter_sets.size());
      plan.adapter_sets.push_back(sets[i]);
    }
    for (int row = all_positions ? seq.token_begin : seq.token_end - 1; row < seq.token_end; ++row) {
      plan.logit_rows.push_back(row);
    }
    plan.seqs.push_back(std::move(seq));
  }
  std::vector<float> logits(plan.logit_rows.size() * model.config().vocab_size);
  if (auto s = model.Forward(plan, pool.data(), layout, logits.data()); !s.ok()) return s;
  return logits;
}

absl::StatusOr<std::vector<int32_t>> GenerateSingle(const LlamaModel& model,
                                                    std::span<const int32_t> prompt,
                                                    const GenerateOptions& options,
                                                    const AdapterContext& adapters,
                                                    const std::function<bool(int32_t)>& on_token) {
  if (auto s = CheckPrompt(model, prompt, options.max_tokens); !s.ok()) return s;
  if (auto s = options.sampling.Validate(); !s.ok()) return s;
  const int block_size = options.kv_block_size;
  const auto layout = model.KvLayout(block_size);
  const int total = static_cast<int>(prompt.size()) + options.max_tokens;
  PagePool pool(layout.page_floats(), (total + block_size - 1) / block_size);
  auto pages = Pages(pool, total, block_size);
  if (!pages.ok()) return pages.status();
  Sampler sampler(options.sampling);
  const int vocab = model.config().vocab_size;
  std::vector<float> logits(vocab);
  std::vector<int32_t> generated;
  std::vector<int32_t> step_tokens(prompt.begin(), prompt.end());
  int position = 0;
  while (static_cast<int>(generated.size()) < options.max_tokens) {
    BatchPlan plan = SingleSequencePlan(step_tokens, position, *pages, adapters);
    plan.logit_rows.push_back(plan.num_tokens() - 1);
    if (auto s = model.Forward(plan, pool.data(), layout, logits.data()); !s.ok()) return s;
    position += plan.num_tokens();
    const int32_t token = sampler.Sample(logits);
    generated.push_back(token);
    if (on_token && !on_token(token)) break;
    if (std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), token) !=
        options.stop_token_ids.end()) {
      break;
    }
    step_tokens = {token};
  }
  return generated;
}

}  // namespace loraserve
