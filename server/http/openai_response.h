// The JSON shapes of OpenAI's responses that the official client parses: completions and chat
// completions, their streamed chunks, usage, and both logprobs formats. Pure builders.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/engine.h"

namespace loraserve::server::http {

// A token's text alone (may hold part of a UTF-8 character).
using TokenTextFn = std::function<std::string(int32_t)>;

struct ResponseHeader {
  std::string id;  // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;
  std::string model;
};

// "stop" or "length" (OpenAI has no other reason a finished choice can give).
const char* FinishReasonString(FinishReason reason);

nlohmann::json UsageJson(int prompt_tokens, int completion_tokens);

// Chat's {"content": [{token, logprob, bytes, top_logprobs: [...]}], "refusal": null}.
nlohmann::json ChatLogprobsJson(const std::vector<TokenLogprobs>& logprobs,
                                const TokenTextFn& text);
// Completions' {tokens, token_logprobs, top_logprobs: [{text: logprob}], text_offset};
// `offset` is the byte offset of the first token in the choice's text and advances.
nlohmann::json CompletionLogprobsJson(const std::vector<TokenLogprobs>& logprobs,
                                      const TokenTextFn& text, size_t* offset);

// One choice of a finished (non-streamed) response.
struct FinishedChoice {
  int index = 0;
  std::string text;
  FinishReason finish_reason = FinishReason::kLength;
  nlohmann::json logprobs;  // null when not requested
};

nlohmann::json CompletionJson(const ResponseHeader& header,
                              const std::vector<FinishedChoice>& choices,
                              const nlohmann::json& usage);
nlohmann::json ChatCompletionJson(const ResponseHeader& header,
                                  const std::vector<FinishedChoice>& choices,
                                  const nlohmann::json& usage);

// Streamed chunks. `delta` is chat's delta object; completions carry `text` instead.
// `with_usage_field` adds "usage": null (OpenAI sends it on every chunk under include_usage).
nlohmann::json ChatChunkJson(const ResponseHeader& header, int index, nlohmann::json delta,
                             nlohmann::json logprobs, const char* finish_reason,
                             bool with_usage_field);
nlohmann::json CompletionChunkJson(const ResponseHeader& header, int index,
                                   const std::string& text, nlohmann::json logprobs,
                                   const char* finish_reason, bool with_usage_field);
// The include_usage chunk: no choices, only usage.
nlohmann::json UsageChunkJson(const ResponseHeader& header, bool chat, nlohmann::json usage);

// One server-sent event frame, exactly "data: <json>\n\n". Invalid UTF-8 (a token holding part
// of a character) is replaced, never an exception.
std::string SseFrame(const nlohmann::json& payload);
std::string DumpJson(const nlohmann::json& payload);

}  // namespace loraserve::server::http
