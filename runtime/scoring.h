// Single-forward scoring paths that bypass the scheduler: logits of a prompt (parity tests, NLL)
// or of several prompts with their own adapter sets in one mixed batch. Each uses a private KV
// pool from the model's backend; adapter rows are read from the caller's pool. Generation has
// one path only: the Engine.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/backend/backend.h"
#include "runtime/llama_model.h"
#include "runtime/resident_adapter.h"

namespace loraserve {

struct AdapterContext {
  const AdapterSetView* set = nullptr;  // nullptr or empty = base model
  const PoolStorage* pool = nullptr;    // the pool the set's offsets index
};

// Logits for every prompt position ([n x vocab]) or only the last one ([1 x vocab]).
absl::StatusOr<std::vector<float>> ScorePrompt(const LlamaModel& model,
                                               std::span<const int32_t> prompt,
                                               bool all_positions,
                                               const AdapterContext& adapters = {});

// One forward pass over several prompts at once, each with its own adapter set (a mixed
// batch); returns each prompt's last-position logits, [prompts x vocab], or with
// all_positions every position of every prompt in order, [sum of lengths x vocab].
absl::StatusOr<std::vector<float>> ScoreBatch(const LlamaModel& model,
                                              const std::vector<std::vector<int32_t>>& prompts,
                                              const std::vector<AdapterSetView>& sets,
                                              const PoolStorage* adapter_pool,
                                              bool all_positions = false);

}  // namespace loraserve
