// Single-request paths that bypass the scheduler: scoring a prompt (parity tests, NLL) and
// generating for one prompt (the in-process `generate` CLI). They use a private page pool.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/llama_model.h"
#include "runtime/sampler.h"

namespace loraserve {

struct AdapterContext {
  const AdapterSetView* set = nullptr;  // nullptr or empty = base model
  const float* pool = nullptr;          // the float pool the set's offsets index
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
                                              const float* adapter_pool,
                                              bool all_positions = false);

struct GenerateOptions {
  int max_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_token_ids;  // generation ends after emitting one of these
  int kv_block_size = 16;
};

// Prefills the prompt in one step, then decodes one token per step. on_token sees each token
// as it is sampled; returning false stops generation.
absl::StatusOr<std::vector<int32_t>> GenerateSingle(
    const LlamaModel& model, std::span<const int32_t> prompt, const GenerateOptions& options,
    const AdapterContext& adapters = {},
    const std::function<bool(int32_t)>& on_token = nullptr);

}  // namespace loraserve
