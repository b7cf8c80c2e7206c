// Per-token log-probabilities for the requests that ask for them: log_softmax of one logits row
// for the sampled token and the k most likely tokens. Host math over the row the step copied
// back, like the sampler; nothing here runs for a request that did not ask.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace loraserve {

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
};

struct TokenLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;  // most likely first (ties: lower id first), size = requested k
};

// log(sum(exp(logits))), max-subtracted so no exponent overflows. Sums in double: a 128k-entry
// vocabulary summed in float would cost ~1e-5 of accuracy for no speed gained (exp dominates).
float LogSumExp(std::span<const float> logits);

// log_softmax(logits) at `chosen` and at the k highest logits (k clamped to the row's size),
// chosen by a single pass with a k-entry heap: O(n log k), no sort of the vocabulary.
TokenLogprobs ComputeTokenLogprobs(std::span<const float> logits, int32_t chosen, int k);

}  // namespace loraserve
