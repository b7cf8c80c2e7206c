// Validation of a GenerationInput: prompt rendering and tokenization, vocabulary range, the
// adapter set, token budget, sampling, stop strings, logprobs and min_tokens, each error naming
// the client's field.
#include "server/generation_input.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loraserve::server {
namespace {

absl::Status NeedTokenizer(const Tokenizer* tokenizer, const std::string& field) {
  if (tokenizer != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      field, ": the served model has no tokenizer.json; send prompt.token_ids instead"));
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const GenerationInput& input,
                                               const Tokenizer* tokenizer) {
  const InputFieldNames& f = input.fields;
  if (const auto* text = std::get_if<TextPrompt>(&input.prompt)) {
    if (absl::Status s = NeedTokenizer(tokenizer, f.text); !s.ok()) return s;
    if (text->text.empty()) return absl::InvalidArgumentError(f.text + ": must not be empty");
    return tokenizer->Encode(text->text, /*add_special_tokens=*/true);
  }
  if (const auto* chat = std::get_if<ChatPrompt>(&input.prompt)) {
    auto rendered = RenderChat(chat->messages, tokenizer, f.chat);
    if (!rendered.ok()) return rendered.status();
    // The template already wrote any BOS it wants.
    return tokenizer->Encode(*rendered, /*add_special_tokens=*/false);
  }
  const auto& tokens = std::get<TokenPrompt>(input.prompt);
  if (tokens.ids.empty()) return absl::InvalidArgumentError(f.token_ids + ": must not be empty");
  return tokens.ids;
}

}  // namespace

absl::StatusOr<std::string> RenderChat(const std::vector<ChatMessage>& messages,
                                       const Tokenizer* tokenizer, const std::string& field) {
  if (absl::Status s = NeedTokenizer(tokenizer, field); !s.ok()) return s;
  if (messages.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".messages: must not be empty"));
  }
  auto rendered = tokenizer->ApplyChatTemplate(messages, /*add_generation_prompt=*/true);
  if (!rendered.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": chat template failed: ", rendered.status().message()));
  }
  return rendered;
}

absl::StatusOr<BuiltRequest> BuildGenerationRequest(const GenerationInput& input,
                                                    const Tokenizer* tokenizer,
                                                    const ModelConfig& model,
                                                    int default_max_tokens) {
  const InputFieldNames& f = input.fields;
  BuiltRequest built;
  GenerationRequest& request = built.request;
  auto prompt = PromptIds(input, tokenizer);
  if (!prompt.ok()) return prompt.status();
  for (size_t i = 0; i < prompt->size(); ++i) {
    if ((*prompt)[i] < 0 || (*prompt)[i] >= model.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(f.token_ids, "[", i, "]: ", (*prompt)[i],
                                                     " is outside the vocabulary [0, ",
                                                     model.vocab_size, ")"));
    }
  }
  request.prompt_ids = *std::move(prompt);

  if (input.adapters.size() > static_cast<size_t>(kMaxMixAdapters)) {
    return absl::InvalidArgumentError(absl::StrCat(f.mix, ": at most ", kMaxMixAdapters,
                                                   " adapters in one request, got ",
                                                   input.adapters.size()));
  }
  std::set<std::string> seen;
  std::vector<std::string> ids;
  for (const AdapterInput& a : input.adapters) {
    if (a.id.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(a.id_field, ": must not be empty (leave the adapter out for the base)"));
    }
    if (!std::isfinite(a.weight)) {
      return absl::InvalidArgumentError(absl::StrCat(a.weight_field, ": must be finite"));
    }
    if (!seen.insert(a.id).second) {
      return absl::InvalidArgumentError(absl::StrCat(a.id_field, ": '", a.id, "' is listed twice"));
    }
    request.adapters.push_back({a.id, a.weight});
    ids.push_back(a.id);
  }
  built.adapter_label = absl::StrJoin(ids, "+");

  if (input.max_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.max_tokens, ": must be >= 1 (0 = server default)"));
  }
  const int64_t prompt_tokens = static_cast<int64_t>(request.prompt_ids.size());
  const std::string& prompt_field = std::holds_alternative<ChatPrompt>(input.prompt) ? f.chat
                                    : std::holds_alternative<TextPrompt>(input.prompt)
                                        ? f.text
                                        : f.token_ids;
  if (prompt_tokens >= model.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        prompt_field, ": the prompt has ", prompt_tokens, " tokens; the model's context is ",
        model.max_position_embeddings, " tokens, which leaves no room to generate"));
  }
  if (input.max_tokens == 0) {
    request.max_tokens = input.max_tokens_to_context
                             ? static_cast<int>(model.max_position_embeddings - prompt_tokens)
                             : default_max_tokens;
  } else {
    request.max_tokens = input.max_tokens;
  }
  // A request that can never fit is the client's to change, not a capacity error to retry.
  if (prompt_tokens + request.max_tokens > model.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.max_tokens, ": the prompt (", prompt_tokens, " tokens) + ", request.max_tokens,
        " new tokens exceeds the model's context of ", model.max_position_embeddings,
        " tokens; lower ", f.max_tokens, " to at most ",
        model.max_position_embeddings - prompt_tokens));
  }
  if (input.sampling.has_value()) {
    request.sampling = *input.sampling;
    if (absl::Status v = request.sampling.Validate(); !v.ok()) {
      return absl::InvalidArgumentError(f.sampling.empty()
                                            ? std::string(v.message())
                                            : absl::StrCat(f.sampling, ": ", v.message()));
    }
  }
  if (input.stop.size() > static_cast<size_t>(kMaxStopStrings)) {
    return absl::InvalidArgumentError(absl::StrCat(f.stop, ": at most ", kMaxStopStrings,
                                                   " stop strings, got ", input.stop.size()));
  }
  for (size_t i = 0; i < input.stop.size(); ++i) {
    if (input.stop[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(f.stop, "[", i, "]: must not be empty"));
    }
    if (input.stop[i].size() > static_cast<size_t>(kMaxStopStringBytes)) {
      return absl::InvalidArgumentError(absl::StrCat(f.stop, "[", i, "]: at most ",
                                                     kMaxStopStringBytes, " bytes, got ",
                                                     input.stop[i].size()));
    }
    if (tokenizer == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(f.stop, ": stop strings need the model's tokenizer.json"));
    }
    request.stop_strings.push_back(input.stop[i]);
  }
  request.ignore_eos = input.ignore_eos;
  if (input.logprobs < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.logprobs, ": must be -1 (none) or >= 0, got ", input.logprobs));
  }
  if (input.logprobs > kMaxLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.logprobs, ": at most ", kMaxLogprobs, " alternatives per token, got ", input.logprobs));
  }
  request.logprobs = input.logprobs;
  if (input.min_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.min_tokens, ": must be >= 0, got ", input.min_tokens));
  }
  if (input.min_tokens > request.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(f.min_tokens, ": ", input.min_tokens,
                                                   " exceeds the most tokens to generate (",
                                                   f.max_tokens, " = ", request.max_tokens, ")"));
  }
  request.min_tokens = input.min_tokens;
  request.deadline = input.deadline;
  return built;
}

}  // namespace loraserve::server
