// Next-token choice from logits: greedy, or temperature -> top-k -> top-p sampling with a
// per-request seeded generator (same order of warpers as transformers' generate()).
#pragma once

#include <cstdint>
#include <random>
#include <span>

#include "absl/status/status.h"

namespace loraserve {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;

  absl::Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int32_t Sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

int32_t Argmax(std::span<const float> logits);

}  // namespace loraserve
