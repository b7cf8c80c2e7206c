#include "server/http/openai_response.h"

namespace loraserve::server::http {

using nlohmann::json;

const char* FinishReasonString(FinishReason reason) {
  return reason == FinishReason::kStop ? "stop" : "length";
}

json UsageJson(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

namespace {

json Bytes(const std::string& text) {
  json bytes = json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

// Valid UTF-8 as JSON needs it: a lone piece of a multi-byte character becomes U+FFFD, as
// Hugging Face's decode() shows it.
std::string Printable(const std::string& text) {
  return json::parse(json(text).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

}  // namespace

json ChatLogprobsJson(const std::vector<TokenLogprobs>& logprobs, const TokenTextFn& text) {
  json content = json::array();
  for (const TokenLogprobs& entry : logprobs) {
    const std::string token = text(entry.chosen.token);
    json top = json::array();
    for (const TokenLogprob& alt : entry.top) {
      const std::string alt_text = text(alt.token);
      top.push_back({{"token", Printable(alt_text)},
                     {"logprob", alt.logprob},
                     {"bytes", Bytes(alt_text)}});
    }
    content.push_back({{"token", Printable(token)},
                       {"logprob", entry.chosen.logprob},
                       {"bytes", Bytes(token)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

json CompletionLogprobsJson(const std::vector<TokenLogprobs>& logprobs, const TokenTextFn& text,
                            size_t* offset) {
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       text_offset = json::array();
  for (const TokenLogprobs& entry : logprobs) {
    const std::string token = text(entry.chosen.token);
    tokens.push_back(Printable(token));
    token_logprobs.push_back(entry.chosen.logprob);
    json top = json::object();
    for (const TokenLogprob& alt : entry.top) {
      const std::string key = Printable(text(alt.token));
      if (!top.contains(key)) top[key] = alt.logprob;
    }
    top_logprobs.push_back(std::move(top));
    text_offset.push_back(*offset);
    *offset += token.size();
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top_logprobs)},
          {"text_offset", std::move(text_offset)}};
}

json CompletionJson(const ResponseHeader& header, const std::vector<FinishedChoice>& choices,
                    const json& usage) {
  json out_choices = json::array();
  for (const FinishedChoice& c : choices) {
    out_choices.push_back({{"index", c.index},
                           {"text", c.text},
                           {"logprobs", c.logprobs},
                           {"finish_reason", FinishReasonString(c.finish_reason)}});
  }
  return {{"id", header.id},          {"object", "text_completion"},
          {"created", header.created}, {"model", header.model},
          {"choices", out_choices},   {"usage", usage}};
}

json ChatCompletionJson(const ResponseHeader& header, const std::vector<FinishedChoice>& choices,
                        const json& usage) {
  json out_choices = json::array();
  for (const FinishedChoice& c : choices) {
    out_choices.push_back({{"index", c.index},
                           {"message", {{"role", "assistant"}, {"content", c.text}}},
                           {"logprobs", c.logprobs},
                           {"finish_reason", FinishReasonString(c.finish_reason)}});
  }
  return {{"id", header.id},          {"object", "chat.completion"},
          {"created", header.created}, {"model", header.model},
          {"choices", out_choices},   {"usage", usage}};
}

json ChatChunkJson(const ResponseHeader& header, int index, json delta, json logprobs,
                   const char* finish_reason, bool with_usage_field) {
  json chunk = {{"id", header.id},
                {"object", "chat.completion.chunk"},
                {"created", header.created},
                {"model", header.model},
                {"choices",
                 json::array({{{"index", index},
                               {"delta", std::move(delta)},
                               {"logprobs", std::move(logprobs)},
                               {"finish_reason", finish_reason ? json(finish_reason)
                                                               : json(nullptr)}}})}};
  if (with_usage_field) chunk["usage"] = nullptr;
  return chunk;
}

json CompletionChunkJson(const ResponseHeader& header, int index, const std::string& text,
                         json logprobs, const char* finish_reason, bool with_usage_field) {
  json chunk = {{"id", header.id},
                {"object", "text_completion"},
                {"created", header.created},
                {"model", header.model},
                {"choices",
                 json::array({{{"index", index},
                               {"text", text},
                               {"logprobs", std::move(logprobs)},
                               {"finish_reason", finish_reason ? json(finish_reason)
                                                               : json(nullptr)}}})}};
  if (with_usage_field) chunk["usage"] = nullptr;
  return chunk;
}

json UsageChunkJson(const ResponseHeader& header, bool chat, json usage) {
  return {{"id", header.id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", header.created},
          {"model", header.model},
          {"choices", json::array()},
          {"usage", std::move(usage)}};
}

std::string DumpJson(const json& payload) {
  return payload.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string SseFrame(const json& payload) { return "data: " + DumpJson(payload) + "\n\n"; }

}  // namespace loraserve::server::http
