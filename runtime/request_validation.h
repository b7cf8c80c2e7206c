// What Engine::Submit checks before a request is queued, as a function of the request and the
// engine's fixed limits (no engine state): errors name the offending field.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "formats/model_config.h"
#include "runtime/engine.h"

namespace loraserve {

struct RequestLimits {
  const ModelConfig* config = nullptr;
  int kv_block_size = 16;
  int32_t pool_pages = 0;
  bool has_tokenizer = false;
};

// INVALID_ARGUMENT (names the field) or RESOURCE_EXHAUSTED (beyond the context or the pool).
absl::Status ValidateRequest(const GenerationRequest& request, const RequestLimits& limits);

// KV blocks the request needs at its longest (prompt + max_tokens).
int64_t KvBlocksNeeded(const GenerationRequest& request, int kv_block_size);

}  // namespace loraserve
