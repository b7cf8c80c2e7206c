#include "server/http/openai_request.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace loraserve::server::http {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// The value of `key`, or null when absent (OpenAI clients send explicit nulls for defaults).
const json* Field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<bool>> GetBool(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean()) return Bad(key, "must be true or false");
  return std::optional<bool>(v->get<bool>());
}

absl::StatusOr<std::optional<double>> GetNumber(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::optional<double>();
  if (!v->is_number()) return Bad(key, "must be a number");
  const double x = v->get<double>();
  if (!std::isfinite(x)) return Bad(key, "must be finite");
  return std::optional<double>(x);
}

// Integers, including integral floats (2.0), as pydantic accepts them.
absl::StatusOr<std::optional<int64_t>> GetInt(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::optional<int64_t>();
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t{INT64_MAX}) {
      return Bad(key, "is out of range");
    }
    return std::optional<int64_t>(v->get<int64_t>());
  }
  if (v->is_number_float()) {
    const double x = v->get<double>();
    if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 9e15) {
      return std::optional<int64_t>(static_cast<int64_t>(x));
    }
  }
  return Bad(key, "must be an integer");
}

absl::StatusOr<int> IntInRange(const json& body, const char* key, int64_t lo, int64_t hi,
                               int fallback) {
  auto v = GetInt(body, key);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return fallback;
  if (**v < lo || **v > hi) {
    return Bad(key, absl::StrCat("must be between ", lo, " and ", hi, ", got ", **v));
  }
  return static_cast<int>(**v);
}

absl::Status RefuseUnless(const json& body, const char* key, bool (*is_default)(const json&),
                          const std::string& why) {
  const json* v = Field(body, key);
  if (v == nullptr || is_default(*v)) return absl::OkStatus();
  return Bad(key, why);
}

bool IsZero(const json& v) { return v.is_number() && v.get<double>() == 0.0; }
bool IsOne(const json& v) { return v.is_number() && v.get<double>() == 1.0; }
bool IsEmpty(const json& v) {
  return (v.is_object() || v.is_array() || v.is_string()) && v.empty();
}
// Whether `object` has `key` equal to the string `text` (json::value() would throw when the
// field holds another type).
bool FieldIs(const json& object, const char* key, const char* text) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() && it->get<std::string>() == text;
}

bool IsTextFormat(const json& v) {
  return v.is_object() && (!v.contains("type") || FieldIs(v, "type", "text"));
}
bool IsNoneChoice(const json& v) { return v.is_string() && v.get<std::string>() == "none"; }

absl::StatusOr<std::vector<std::string>> ParseStop(const json& body, const RequestLimits& limits) {
  std::vector<std::string> stop;
  const json* v = Field(body, "stop");
  if (v == nullptr) return stop;
  if (v->is_string()) {
    stop.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string()) return Bad(absl::StrCat("stop[", i, "]"), "must be a string");
      stop.push_back((*v)[i].get<std::string>());
    }
  } else {
    return Bad("stop", "must be a string or a list of strings");
  }
  if (static_cast<int>(stop.size()) > limits.max_stop) {
    return Bad("stop", absl::StrCat("at most ", limits.max_stop, " stop strings, got ", stop.size()));
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    const std::string field = v->is_string() ? "stop" : absl::StrCat("stop[", i, "]");
    if (stop[i].empty()) return Bad(field, "must not be empty");
    if (static_cast<int>(stop[i].size()) > limits.max_stop_bytes) {
      return Bad(field, absl::StrCat("at most ", limits.max_stop_bytes, " bytes"));
    }
  }
  return stop;
}

// Completions' `prompt`: a string, a list of strings, a list of token ids, or a list of lists of
// token ids.
absl::Status ParsePrompt(const json& body, OpenAiRequest& out,
                         std::vector<std::pair<PromptInput, std::string>>& prompts) {
  const json* v = Field(body, "prompt");
  if (v == nullptr) return Bad("prompt", "is required");
  auto token_list = [](const json& list, const std::string& field,
                       std::vector<int32_t>& ids) -> absl::Status {
    if (list.empty()) return Bad(field, "must not be empty");
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].is_number_integer()) {
        return Bad(absl::StrCat(field, "[", i, "]"), "must be a token id (an integer)");
      }
      const int64_t id = list[i].get<int64_t>();
      if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
        return Bad(absl::StrCat(field, "[", i, "]"), absl::StrCat(id, " is not a token id"));
      }
      ids.push_back(static_cast<int32_t>(id));
    }
    return absl::OkStatus();
  };
  if (v->is_string()) {
    prompts.push_back({TextPrompt{v->get<std::string>()}, "prompt"});
    out.prompt_texts.push_back(v->get<std::string>());
    return absl::OkStatus();
  }
  if (!v->is_array()) {
    return Bad("prompt", "must be a string, a list of strings, a list of token ids or a list of "
                         "lists of token ids");
  }
  if (v->empty()) return Bad("prompt", "must not be empty");
  const json& first = (*v)[0];
  if (first.is_number_integer()) {
    TokenPrompt tokens;
    if (absl::Status s = token_list(*v, "prompt", tokens.ids); !s.ok()) return s;
    prompts.push_back({std::move(tokens), "prompt"});
    out.prompt_texts.push_back("");
    return absl::OkStatus();
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const json& item = (*v)[i];
    const std::string field = absl::StrCat("prompt[", i, "]");
    if (first.is_string()) {
      if (!item.is_string()) return Bad(field, "must be a string like prompt[0]");
      prompts.push_back({TextPrompt{item.get<std::string>()}, field});
      out.prompt_texts.push_back(item.get<std::string>());
    } else if (first.is_array()) {
      if (!item.is_array()) return Bad(field, "must be a list of token ids like prompt[0]");
      TokenPrompt tokens;
      if (absl::Status s = token_list(item, field, tokens.ids); !s.ok()) return s;
      prompts.push_back({std::move(tokens), field});
      out.prompt_texts.push_back("");
    } else {
      return Bad(field, "must be a string, a token id or a list of token ids");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ChatMessage>> ParseMessages(const json& body) {
  const json* v = Field(body, "messages");
  if (v == nullptr) return Bad("messages", "is required");
  if (!v->is_array()) return Bad("messages", "must be a list of messages");
  if (v->empty()) return Bad("messages", "must not be empty");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& m = (*v)[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Bad(field, "must be an object with role and content");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return Bad(field + ".role", "must be a string");
    }
    ChatMessage message;
    message.role = role->get<std::string>();
    if (message.role != "system" && message.role != "user" && message.role != "assistant" &&
        message.role != "developer" && message.role != "tool") {
      return Bad(field + ".role", absl::StrCat("'", message.role,
                                               "' is not one of system, developer, user, "
                                               "assistant, tool"));
    }
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      if (message.role != "assistant") return Bad(field + ".content", "is required");
    } else if (content->is_string()) {
      message.content = content->get<std::string>();
    } else if (content->is_array()) {
      // Content parts: only text parts reach a text-only model.
      for (size_t j = 0; j < content->size(); ++j) {
        const json& part = (*content)[j];
        const std::string part_field = absl::StrCat(field, ".content[", j, "]");
        if (!part.is_object() || !FieldIs(part, "type", "text")) {
          return Bad(part_field, "only {\"type\": \"text\"} parts are supported");
        }
        auto text = part.find("text");
        if (text == part.end() || !text->is_string()) {
          return Bad(part_field + ".text", "must be a string");
        }
        message.content += text->get<std::string>();
      }
    } else {
      return Bad(field + ".content", "must be a string or a list of content parts");
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

absl::StatusOr<std::optional<MergedAdaptersInput>> ParseMergedAdapters(const json& body,
                                                                       int max_adapters) {
  const json* v = Field(body, "merged_adapters");
  if (v == nullptr) return std::optional<MergedAdaptersInput>();
  if (!v->is_object()) return Bad("merged_adapters", "must be an object {ids, weights}");
  MergedAdaptersInput merged;
  const json* ids = Field(*v, "ids");
  if (ids == nullptr || !ids->is_array()) {
    return Bad("merged_adapters.ids", "must be a list of adapter ids");
  }
  if (ids->empty()) return Bad("merged_adapters.ids", "must name at least one adapter");
  if (ids->size() > static_cast<size_t>(max_adapters)) {
    return Bad("merged_adapters.ids", absl::StrCat("at most ", max_adapters,
                                                   " adapters in one request, got ", ids->size()));
  }
  for (size_t i = 0; i < ids->size(); ++i) {
    if (!(*ids)[i].is_string()) {
      return Bad(absl::StrCat("merged_adapters.ids[", i, "]"), "must be a string");
    }
    merged.ids.push_back((*ids)[i].get<std::string>());
  }
  const json* weights = Field(*v, "weights");
  if (weights == nullptr || !weights->is_array()) {
    return Bad("merged_adapters.weights", "must be a list of numbers, one per id");
  }
  if (weights->size() != ids->size()) {
    return Bad("merged_adapters.weights",
               absl::StrCat("has ", weights->size(), " weights for ", ids->size(), " ids"));
  }
  for (size_t i = 0; i < weights->size(); ++i) {
    const json& w = (*weights)[i];
    if (!w.is_number() || !std::isfinite(w.get<double>())) {
      return Bad(absl::StrCat("merged_adapters.weights[", i, "]"), "must be a finite number");
    }
    merged.weights.push_back(w.get<float>());
  }
  const json* strategy = Field(*v, "merge_strategy");
  if (strategy != nullptr) {
    if (!strategy->is_string()) return Bad("merged_adapters.merge_strategy", "must be a string");
    const std::string name = strategy->get<std::string>();
    if (name == "ties" || name == "dare_linear" || name == "dare_ties") {
      return Bad("merged_adapters.merge_strategy",
                 absl::StrCat("'", name, "' is not supported at request time (only linear); "
                                         "fuse offline with the FuseAdapters admin call"));
    }
    if (name != "linear") {
      return Bad("merged_adapters.merge_strategy",
                 absl::StrCat("'", name, "' is not one of linear, ties, dare_linear, dare_ties"));
    }
  }
  if (const json* density = Field(*v, "density"); density != nullptr) {
    if (!density->is_number() || density->get<double>() < 0 || density->get<double>() > 1) {
      return Bad("merged_adapters.density", "must be a number in [0, 1]");
    }
  }
  if (const json* sign = Field(*v, "majority_sign_method"); sign != nullptr) {
    if (!sign->is_string() ||
        (sign->get<std::string>() != "total" && sign->get<std::string>() != "frequency")) {
      return Bad("merged_adapters.majority_sign_method", "must be total or frequency");
    }
  }
  return std::optional<MergedAdaptersInput>(std::move(merged));
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(ApiKind kind, const json& body,
                                                 uint64_t random_seed,
                                                 const RequestLimits& limits) {
  if (!body.is_object()) return Bad("body", "must be a JSON object");
  OpenAiRequest out;
  out.kind = kind;
  const bool chat = kind == ApiKind::kChat;
  const json* model = Field(body, "model");
  if (model == nullptr) return Bad("model", "is required");
  if (!model->is_string()) return Bad("model", "must be a string");
  out.model = model->get<std::string>();

  // Features a text-only LoRA server does not have: refused rather than silently ignored,
  // unless the client sent the value that means "off".
  const char* penalty = "is not supported (only 0)";
  for (absl::Status s : {RefuseUnless(body, "presence_penalty", IsZero, penalty),
                         RefuseUnless(body, "frequency_penalty", IsZero, penalty),
                         RefuseUnless(body, "repetition_penalty", IsOne,
                                      "is not supported (only 1)"),
                         RefuseUnless(body, "logit_bias", IsEmpty, "is not supported"),
                         RefuseUnless(body, "suffix", IsEmpty, "is not supported"),
                         RefuseUnless(body, "tools", IsEmpty, "tool calling is not supported"),
                         RefuseUnless(body, "functions", IsEmpty, "is not supported"),
                         RefuseUnless(body, "tool_choice", IsNoneChoice,
                                      "tool calling is not supported"),
                         RefuseUnless(body, "response_format", IsTextFormat,
                                      "only {\"type\": \"text\"} is supported"),
                         RefuseUnless(body, "chat_template", IsEmpty,
                                      "custom chat templates are not supported")}) {
    if (!s.ok()) return s;
  }

  std::vector<std::pair<PromptInput, std::string>> prompts;
  if (chat) {
    auto messages = ParseMessages(body);
    if (!messages.ok()) return messages.status();
    prompts.push_back({ChatPrompt{*std::move(messages)}, "messages"});
    out.prompt_texts.push_back("");
  } else {
    if (absl::Status s = ParsePrompt(body, out, prompts); !s.ok()) return s;
  }
  out.num_prompts = static_cast<int>(prompts.size());

  auto n = IntInRange(body, "n", 1, limits.max_choices, 1);
  if (!n.ok()) return n.status();
  out.n = *n;
  if (out.n * out.num_prompts > limits.max_choices) {
    return Bad("n", absl::StrCat(out.num_prompts, " prompts x n = ", out.n, " asks for ",
                                 out.n * out.num_prompts, " choices; at most ",
                                 limits.max_choices));
  }
  if (auto best_of = GetInt(body, "best_of"); !best_of.ok()) {
    return best_of.status();
  } else if (best_of->has_value() && **best_of != out.n) {
    return Bad("best_of", "is not supported (only equal to n)");
  }

  auto stream = GetBool(body, "stream");
  if (!stream.ok()) return stream.status();
  out.stream = stream->value_or(false);
  if (const json* options = Field(body, "stream_options"); options != nullptr) {
    if (!out.stream) return Bad("stream_options", "is only allowed with stream: true");
    if (!options->is_object()) return Bad("stream_options", "must be an object");
    auto include = GetBool(*options, "include_usage");
    if (!include.ok()) return Bad("stream_options.include_usage", "must be true or false");
    out.include_usage = include->value_or(false);
  }
  if (!chat) {
    auto echo = GetBool(body, "echo");
    if (!echo.ok()) return echo.status();
    out.echo = echo->value_or(false);
  }

  // Logprobs: completions take `logprobs: k`; chat takes `logprobs: bool` + `top_logprobs: k`.
  if (chat) {
    auto logprobs = GetBool(body, "logprobs");
    if (!logprobs.ok()) return logprobs.status();
    out.logprobs = logprobs->value_or(false);
    auto top = IntInRange(body, "top_logprobs", 0, limits.max_logprobs, 0);
    if (!top.ok()) return top.status();
    if (*top > 0 && !out.logprobs) return Bad("top_logprobs", "needs logprobs: true");
    out.top_logprobs = *top;
  } else {
    auto k = IntInRange(body, "logprobs", 0, limits.max_logprobs, -1);
    if (!k.ok()) return k.status();
    out.logprobs = *k >= 0;
    out.top_logprobs = std::max(0, *k);
    if (out.logprobs && out.echo) {
      return Bad("echo", "with logprobs would need prompt logprobs, which are not supported");
    }
  }

  GenerationInput shared;
  // max_completion_tokens is the newer name; it wins when both are sent.
  const char* max_field = Field(body, "max_completion_tokens") ? "max_completion_tokens"
                                                               : "max_tokens";
  auto max_tokens = IntInRange(body, max_field, 1, std::numeric_limits<int32_t>::max(), 0);
  if (!max_tokens.ok()) return max_tokens.status();
  shared.max_tokens = *max_tokens;
  // OpenAI's defaults: 16 tokens for completions, the rest of the context for chat.
  shared.max_tokens_to_context = chat;
  shared.fields.max_tokens = max_field;

  auto temperature = GetNumber(body, "temperature");
  if (!temperature.ok()) return temperature.status();
  auto top_p = GetNumber(body, "top_p");
  if (!top_p.ok()) return top_p.status();
  auto top_k = GetInt(body, "top_k");
  if (!top_k.ok()) return top_k.status();
  auto seed = GetInt(body, "seed");
  if (!seed.ok()) return seed.status();
  SamplingParams sampling;
  sampling.temperature = static_cast<float>(temperature->value_or(1.0));
  if (sampling.temperature < 0) return Bad("temperature", "must be >= 0");
  sampling.top_p = static_cast<float>(top_p->value_or(1.0));
  // vLLM's top_k: -1 or 0 = off.
  if (top_k->has_value() && **top_k < -1) return Bad("top_k", "must be -1 (off) or >= 0");
  sampling.top_k = top_k->has_value() && **top_k > 0
                       ? static_cast<int>(std::min<int64_t>(**top_k, INT32_MAX))
                       : 0;
  shared.fields.sampling = "";  // SamplingParams' messages name temperature, top_p, top_k

  auto stop = ParseStop(body, limits);
  if (!stop.ok()) return stop.status();
  shared.stop = *std::move(stop);
  auto ignore_eos = GetBool(body, "ignore_eos");
  if (!ignore_eos.ok()) return ignore_eos.status();
  shared.ignore_eos = ignore_eos->value_or(false);
  auto min_tokens = IntInRange(body, "min_tokens", 0, std::numeric_limits<int32_t>::max(), 0);
  if (!min_tokens.ok()) return min_tokens.status();
  shared.min_tokens = *min_tokens;
  shared.logprobs = out.logprobs ? out.top_logprobs : -1;
  shared.fields.logprobs = chat ? "top_logprobs" : "logprobs";
  shared.fields.mix = "merged_adapters.ids";

  auto merged = ParseMergedAdapters(body, limits.max_mix);
  if (!merged.ok()) return merged.status();
  out.merged_adapters = *std::move(merged);

  const uint64_t base_seed = seed->has_value() ? static_cast<uint64_t>(**seed) : random_seed;
  for (int p = 0; p < out.num_prompts; ++p) {
    for (int j = 0; j < out.n; ++j) {
      ChoiceInput choice;
      choice.index = p * out.n + j;
      choice.prompt_index = p;
      choice.input = shared;
      choice.input.prompt = prompts[p].first;
      choice.input.fields.text = prompts[p].second;
      choice.input.fields.token_ids = prompts[p].second;
      choice.input.fields.chat = prompts[p].second;
      if (sampling.temperature > 0) {
        SamplingParams s = sampling;
        s.seed = base_seed + static_cast<uint64_t>(j);
        choice.input.sampling = s;
      } else if (sampling.top_p != 1.0f || sampling.top_k != 0) {
        // Greedy with a truncation: still validated like any sampling setting.
        choice.input.sampling = sampling;
      }
      out.choices.push_back(std::move(choice));
    }
  }
  return out;
}

}  // namespace loraserve::server::http
