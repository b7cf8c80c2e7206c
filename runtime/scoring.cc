#include "runtime/scoring.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/lora_plan_builder.h"
#include "runtime/page_pool.h"

namespace loraserve {
namespace {

constexpr int kBlockSize = 16;

absl::Status CheckPrompt(const LlamaModel& model, std::span<const int32_t> prompt) {
  if (prompt.empty()) return absl::InvalidArgumentError("prompt: must hold at least one token");
  const int limit = model.config().max_position_embeddings;
  if (static_cast<int>(prompt.size()) > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "prompt: ", prompt.size(), " tokens exceed the model context of ", limit));
  }
  return absl::OkStatus();
}

// Runs `plan` with `sets` over a fresh KV pool of `pages` pages.
absl::StatusOr<std::vector<float>> Run(const LlamaModel& model, BatchPlan& plan,
                                       const std::vector<AdapterSetView>& sets,
                                       const PoolStorage* adapter_pool, int32_t pages) {
  const auto layout = model.KvLayout(kBlockSize);
  auto kv = model.backend().CreatePool(layout.page_floats(), pages);
  if (!kv.ok()) return kv.status();
  bool any_set = false;
  for (const auto& set : sets) any_set |= !set.empty();
  if (any_set && adapter_pool == nullptr) {
    return absl::InvalidArgumentError("adapters: a set was given without its pool");
  }
  auto lora = BuildLoraPlan(plan.seqs, sets, model.config().num_layers);
  if (!lora.ok()) return lora.status();
  plan.lora = std::move(*lora);
  std::vector<float> logits(plan.logit_rows.size() * model.config().vocab_size);
  const PoolStorage& lora_pool = adapter_pool != nullptr ? *adapter_pool : **kv;
  if (auto s = model.Forward(plan, **kv, lora_pool, layout, logits.data()); !s.ok()) return s;
  return logits;
}

}  // namespace

absl::StatusOr<std::vector<float>> ScorePrompt(const LlamaModel& model,
                                               std::span<const int32_t> prompt,
                                               bool all_positions, const AdapterContext& adapters) {
  std::vector<AdapterSetView> sets;
  if (adapters.set != nullptr && !adapters.set->empty()) sets.push_back(*adapters.set);
  return ScoreBatch(model, {std::vector<int32_t>(prompt.begin(), prompt.end())},
                    sets.empty() ? std::vector<AdapterSetView>(1) : sets, adapters.pool,
                    all_positions);
}

absl::StatusOr<std::vector<float>> ScoreBatch(const LlamaModel& model,
                                              const std::vector<std::vector<int32_t>>& prompts,
                                              const std::vector<AdapterSetView>& sets,
                                              const PoolStorage* adapter_pool,
                                              bool all_positions) {
  if (sets.size() != prompts.size()) {
    return absl::InvalidArgumentError("ScoreBatch: one adapter set per prompt");
  }
  int32_t total_pages = 0;
  for (const auto& prompt : prompts) {
    if (auto s = CheckPrompt(model, prompt); !s.ok()) return s;
    total_pages += (static_cast<int32_t>(prompt.size()) + kBlockSize - 1) / kBlockSize;
  }
  PagePool pages(model.KvLayout(kBlockSize).page_floats(), total_pages);
  BatchPlan plan;
  std::vector<AdapterSetView> used_sets;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int n = static_cast<int>(prompts[i].size());
    auto block_table = pages.Allocate((n + kBlockSize - 1) / kBlockSize);
    if (!block_table) return absl::ResourceExhaustedError("KV pool too small");
    SequencePlan seq;
    seq.token_begin = plan.num_tokens();
    for (int p = 0; p < n; ++p) {
      plan.token_ids.push_back(prompts[i][p]);
      plan.positions.push_back(p);
    }
    seq.token_end = plan.num_tokens();
    seq.block_table = *block_table;
    if (!sets[i].empty()) {
      seq.adapter_set = static_cast<int>(used_sets.size());
      used_sets.push_back(sets[i]);
    }
    for (int row = all_positions ? seq.token_begin : seq.token_end - 1; row < seq.token_end;
         ++row) {
      plan.logit_rows.push_back(row);
    }
    plan.seqs.push_back(std::move(seq));
  }
  return Run(model, plan, used_sets, adapter_pool, total_pages);
}

}  // namespace loraserve
