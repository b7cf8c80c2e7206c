// Fuzzes the OpenAI HTTP body decoder as the server runs it (openai_server.cc): the body's
// bytes through nlohmann::json::parse, then ParseOpenAiRequest for both /v1/completions and
// /v1/chat/completions. Any body is an INVALID_ARGUMENT naming a field, or a request within the
// limits.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "server/http/openai_request.h"

using loraserve::server::http::ApiKind;
using loraserve::server::http::RequestLimits;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json body = nlohmann::json::parse(data, data + size, nullptr,
                                                    /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  const RequestLimits limits;
  for (ApiKind kind : {ApiKind::kCompletion, ApiKind::kChat}) {
    auto request = loraserve::server::http::ParseOpenAiRequest(kind, body, 1234, limits);
    if (!request.ok()) {
      if (request.status().code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
      continue;
    }
    if (request->choices.empty() ||
        static_cast<int>(request->choices.size()) != request->num_prompts * request->n ||
        static_cast<int>(request->choices.size()) > limits.max_choices) {
      __builtin_trap();
    }
    for (const auto& choice : request->choices) {
      if (static_cast<int>(choice.input.stop.size()) > limits.max_stop) __builtin_trap();
    }
  }
  return 0;
}
