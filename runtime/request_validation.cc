#include "runtime/request_validation.h"

#include "absl/strings/str_cat.h"

namespace loraserve {

int64_t KvBlocksNeeded(const GenerationRequest& request, int kv_block_size) {
  const int64_t context = static_cast<int64_t>(request.prompt_ids.size()) + request.max_tokens;
  return (context + kv_block_size - 1) / kv_block_size;
}

absl::Status ValidateRequest(const GenerationRequest& request, const RequestLimits& limits) {
  const ModelConfig& c = *limits.config;
  if (request.prompt_ids.empty()) {
    return absl::InvalidArgumentError("prompt: must contain at least one token");
  }
  for (size_t i = 0; i < request.prompt_ids.size(); ++i) {
    if (request.prompt_ids[i] < 0 || request.prompt_ids[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt_ids[", i, "]: ",
                                                     request.prompt_ids[i],
                                                     " is outside the vocabulary"));
    }
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError("max_tokens: must be at least 1");
  }
  if (request.min_tokens < 0 || request.min_tokens > request.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_tokens: must be in [0, max_tokens = ", request.max_tokens, "], got ",
                     request.min_tokens));
  }
  if (request.logprobs < -1 || request.logprobs > c.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs: must be -1 (none) or a count of alternatives in [0, ", c.vocab_size,
                     "], got ", request.logprobs));
  }
  if (auto s = request.sampling.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.", s.message()));
  }
  const int64_t context = static_cast<int64_t>(request.prompt_ids.size()) + request.max_tokens;
  if (context > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", request.prompt_ids.size(), " tokens) + max_tokens (", request.max_tokens,
        ") exceeds the model context of ", c.max_position_embeddings, " tokens"));
  }
  const int64_t pages_needed = KvBlocksNeeded(request, limits.kv_block_size);
  if (pages_needed > limits.pool_pages) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request needs ", pages_needed, " KV blocks, the pool holds ", limits.pool_pages));
  }
  if (!request.stop_strings.empty() && !limits.has_tokenizer) {
    return absl::InvalidArgumentError("stop: stop strings need a tokenizer");
  }
  return absl::OkStatus();
}

}  // namespace loraserve
