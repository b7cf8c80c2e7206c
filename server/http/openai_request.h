// Decoding of POST /v1/completions and /v1/chat/completions bodies into generation inputs, with
// OpenAI's field semantics and vLLM's extra sampling fields (top_k, min_tokens, ignore_eos).
// Pure: no server state. Every error is INVALID_ARGUMENT and starts with the field at fault, so
// the HTTP layer can answer 400 with `param` set. Unknown fields are ignored, as vLLM does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "server/generation_input.h"

namespace loraserve::server::http {

enum class ApiKind { kCompletion, kChat };

// LoRAX's request-time merge, {ids, weights, merge_strategy: linear}.
struct MergedAdaptersInput {
  std::vector<std::string> ids;
  std::vector<float> weights;
};

// One generation the request asks for: prompt i, sample j of n.
struct ChoiceInput {
  int index = 0;         // the choice's index in the response: prompt * n + sample
  int prompt_index = 0;  // which prompt (usage counts each prompt once)
  GenerationInput input;  // adapters unset: the caller resolves `model`
};

struct OpenAiRequest {
  ApiKind kind = ApiKind::kCompletion;
  std::string model;  // as sent; responses echo it byte for byte
  std::vector<ChoiceInput> choices;
  std::vector<std::string> prompt_texts;  // completions' text prompts (for echo); "" for ids
  int num_prompts = 1;
  int n = 1;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;
  bool logprobs = false;  // the response carries logprobs
  int top_logprobs = 0;   // alternatives per token (completions' `logprobs` value)
  std::optional<MergedAdaptersInput> merged_adapters;
};

struct RequestLimits {
  int max_choices = 64;      // prompts x n
  int max_stop = kMaxStopStrings;            // stop strings
  int max_stop_bytes = kMaxStopStringBytes;  // bytes of one stop string
  int max_logprobs = kMaxLogprobs;
  int max_mix = kMaxMixAdapters;  // merged_adapters.ids
};

// `random_seed` seeds the choices of a request that names no `seed` (choice j gets seed + j, so
// n samples differ); a request with a seed is reproducible.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(ApiKind kind, const nlohmann::json& body,
                                                 uint64_t random_seed,
                                                 const RequestLimits& limits = {});

}  // namespace loraserve::server::http
