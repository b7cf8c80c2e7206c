// The k best are kept in a min-heap whose root is the worst kept entry, so each further logit
// costs one comparison unless it beats the root; ties order by lower token id, so the result
// does not depend on how the vocabulary is scanned.
#include "runtime/token_logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace loraserve {
namespace {

// a ranks above b: a higher logit, or the same logit and a lower id.
bool Better(const TokenLogprob& a, const TokenLogprob& b) {
  return a.logprob > b.logprob || (a.logprob == b.logprob && a.token < b.token);
}

}  // namespace

float LogSumExp(std::span<const float> logits) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (float x : logits) max_logit = std::max(max_logit, x);
  if (!std::isfinite(max_logit)) return max_logit;
  double sum = 0.0;
  for (float x : logits) sum += std::exp(x - max_logit);
  return max_logit + static_cast<float>(std::log(sum));
}

TokenLogprobs ComputeTokenLogprobs(std::span<const float> logits, int32_t chosen, int k) {
  const float lse = LogSumExp(logits);
  TokenLogprobs out;
  out.chosen = {chosen, logits[chosen] - lse};
  const size_t keep = std::min(static_cast<size_t>(std::max(k, 0)), logits.size());
  if (keep == 0) return out;
  // Holds raw logits until the end; std::*_heap with Better is a min-heap on rank.
  std::vector<TokenLogprob>& heap = out.top;
  heap.reserve(keep);
  for (size_t i = 0; i < logits.size(); ++i) {
    const TokenLogprob entry{static_cast<int32_t>(i), logits[i]};
    if (heap.size() < keep) {
      heap.push_back(entry);
      std::push_heap(heap.begin(), heap.end(), Better);
    } else if (Better(entry, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), Better);
      heap.back() = entry;
      std::push_heap(heap.begin(), heap.end(), Better);
    }
  }
  std::sort_heap(heap.begin(), heap.end(), Better);
  for (TokenLogprob& entry : heap) entry.logprob -= lse;
  return out;
}

}  // namespace loraserve
