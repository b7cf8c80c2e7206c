// What a client asks of one generation, in no transport's terms, and its validation into an
// engine GenerationRequest. Every transport (gRPC today, OpenAI HTTP next) decodes its request
// into a GenerationInput; all semantic checks live here, so the transports cannot drift apart.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine.h"
#include "runtime/tokenizer/tokenizer.h"

namespace loraserve::server {

struct TextPrompt {
  std::string text;  // encoded with the tokenizer's special tokens (BOS)
};
struct ChatPrompt {
  std::vector<ChatMessage> messages;  // rendered with the model's chat template
};
struct TokenPrompt {
  std::vector<int32_t> ids;  // used as they are
};
using PromptInput = std::variant<TextPrompt, ChatPrompt, TokenPrompt>;

// One adapter of the request. The field paths are where the transport's request named it, so
// errors point at what the client wrote ("adapter_id", "mix.adapters[1].weight", "model").
struct AdapterInput {
  std::string id;
  float weight = 1.0f;
  std::string id_field;
  std::string weight_field;
};

// The transport's names for the remaining fields, used as error prefixes. The defaults are the
// loraserve.v1.GenerateRequest names.
struct InputFieldNames {
  std::string text = "text";
  std::string chat = "chat";
  std::string token_ids = "token_ids.ids";
  std::string max_tokens = "max_tokens";
  std::string sampling = "sampling";  // empty: SamplingParams' own field names stand alone
  std::string stop = "stop";
  std::string logprobs = "logprobs";
  std::string min_tokens = "min_tokens";
  std::string mix = "mix.adapters";  // the list of a request-time fusion
};

// Most alternatives a request may ask for per token (OpenAI's top_logprobs limit).
inline constexpr int kMaxLogprobs = 20;
// Stop strings per request and bytes per stop string (OpenAI's limits are 4 strings; vLLM has
// none). Every generated token is checked against each, so the count bounds per-token work.
inline constexpr int kMaxStopStrings = 16;
inline constexpr int kMaxStopStringBytes = 256;
// Adapters fused in one request (a mix): each costs a LoRA segment in every module of every
// step the request is in.
inline constexpr int kMaxMixAdapters = 16;

struct GenerationInput {
  PromptInput prompt;
  std::vector<AdapterInput> adapters;      // empty = base model; several = request-time fusion
  int max_tokens = 0;                      // 0 = the server's default
  // max_tokens 0 means the rest of the model's context (OpenAI chat) instead.
  bool max_tokens_to_context = false;
  std::optional<SamplingParams> sampling;  // unset = greedy
  std::vector<std::string> stop;
  bool ignore_eos = false;
  // -1 = none; k in [0, kMaxLogprobs]: each token's log-probability and the k most likely.
  int logprobs = -1;
  int min_tokens = 0;  // EOS and stop strings are ignored until this many tokens (<= max_tokens)
  std::optional<std::chrono::steady_clock::time_point> deadline;
  InputFieldNames fields;
};

struct BuiltRequest {
  GenerationRequest request;
  // Metrics label: "" (base), the adapter id, or ids joined with '+'.
  std::string adapter_label;
};

// Validates `input` against the model and tokenizer (`tokenizer` may be null: token prompts
// only). INVALID_ARGUMENT names the field; FAILED_PRECONDITION when a tokenizer is needed.
absl::StatusOr<BuiltRequest> BuildGenerationRequest(const GenerationInput& input,
                                                    const Tokenizer* tokenizer,
                                                    const ModelConfig& model,
                                                    int default_max_tokens);

// Renders chat messages with the model's chat template; names `field` in errors.
absl::StatusOr<std::string> RenderChat(const std::vector<ChatMessage>& messages,
                                       const Tokenizer* tokenizer, const std::string& field);

}  // namespace loraserve::server
