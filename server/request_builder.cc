#include "server/request_builder.h"

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

}  // namespace

absl::StatusOr<std::string> RenderChat(const v1::ChatMessages& chat, const Tokenizer* tokenizer,
                                       const std::string& field) {
  if (absl::Status s = NeedTokenizer(tokenizer, field); !s.ok()) return s;
  if (chat.messages().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".messages: must not be empty"));
  }
  std::vector<ChatMessage> messages;
  for (const v1::ChatMessage& m : chat.messages()) messages.push_back({m.role(), m.content()});
  auto rendered = tokenizer->ApplyChatTemplate(messages, /*add_generation_prompt=*/true);
  if (!rendered.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": chat template failed: ", rendered.status().message()));
  }
  return rendered;
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::GenerateRequest& proto,
                                               const Tokenizer* tokenizer) {
  switch (proto.prompt_case()) {
    case v1::GenerateRequest::kText:
      if (absl::Status s = NeedTokenizer(tokenizer, "text"); !s.ok()) return s;
      if (proto.text().empty()) return absl::InvalidArgumentError("text: must not be empty");
      return tokenizer->Encode(proto.text(), /*add_special_tokens=*/true);
    case v1::GenerateRequest::kChat: {
      auto rendered = RenderChat(proto.chat(), tokenizer, "chat");
      if (!rendered.ok()) return rendered.status();
      // The template already wrote any BOS it wants.
      return tokenizer->Encode(*rendered, /*add_special_tokens=*/false);
    }
    case v1::GenerateRequest::kTokenIds:
      if (proto.token_ids().ids().empty()) {
        return absl::InvalidArgumentError("token_ids.ids: must not be empty");
      }
      return std::vector<int32_t>(proto.token_ids().ids().begin(), proto.token_ids().ids().end());
    case v1::GenerateRequest::PROMPT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("prompt: set one of text, chat or token_ids");
}

absl::StatusOr<BuiltRequest> BuildGenerationRequest(
    const v1::GenerateRequest& proto, const Tokenizer* tokenizer, const ModelConfig& model,
    int default_max_tokens, std::chrono::system_clock::time_point deadline) {
  BuiltRequest built;
  GenerationRequest& request = built.request;
  auto prompt = PromptIds(proto, tokenizer);
  if (!prompt.ok()) return prompt.status();
  for (size_t i = 0; i < prompt->size(); ++i) {
    if ((*prompt)[i] < 0 || (*prompt)[i] >= model.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token_ids.ids[", i, "]: ", (*prompt)[i],
                                                     " is outside the vocabulary [0, ",
                                                     model.vocab_size, ")"));
    }
  }
  request.prompt_ids = *std::move(prompt);

  if (proto.adapters_case() == v1::GenerateRequest::kAdapterId) {
    if (proto.adapter_id().empty()) {
      return absl::InvalidArgumentError("adapter_id: must not be empty (unset it for the base)");
    }
    request.adapters.push_back({proto.adapter_id(), 1.0f});
    built.adapter_label = proto.adapter_id();
  } else if (proto.adapters_case() == v1::GenerateRequest::kMix) {
    std::set<std::string> seen;
    std::vector<std::string> ids;
    for (int i = 0; i < proto.mix().adapters_size(); ++i) {
      const v1::WeightedAdapter& a = proto.mix().adapters(i);
      const std::string field = absl::StrCat("mix.adapters[", i, "]");
      if (a.adapter_id().empty()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".adapter_id: must not be empty"));
      }
      if (!std::isfinite(a.weight())) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".weight: must be finite"));
      }
      if (!seen.insert(a.adapter_id()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".adapter_id: '", a.adapter_id(), "' is listed twice"));
      }
      request.adapters.push_back({a.adapter_id(), a.weight()});
      ids.push_back(a.adapter_id());
    }
    built.adapter_label = absl::StrJoin(ids, "+");
  }

  if (proto.max_tokens() < 0) {
    return absl::InvalidArgumentError("max_tokens: must be >= 1 (0 = server default)");
  }
  request.max_tokens = proto.max_tokens() == 0 ? default_max_tokens : proto.max_tokens();
  if (proto.has_sampling()) {
    const v1::SamplingParams& s = proto.sampling();
    request.sampling.temperature = s.temperature();
    request.sampling.top_k = s.top_k();
    request.sampling.top_p = s.top_p() == 0 ? 1.0f : s.top_p();
    request.sampling.seed = s.seed();
    if (absl::Status v = request.sampling.Validate(); !v.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("sampling: ", v.message()));
    }
  }
  for (int i = 0; i < proto.stop_size(); ++i) {
    if (proto.stop(i).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "]: must not be empty"));
    }
    if (tokenizer == nullptr) {
      return absl::FailedPreconditionError("stop: stop strings need the model's tokenizer.json");
    }
    request.stop_strings.push_back(proto.stop(i));
  }
  request.ignore_eos = proto.ignore_eos();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    request.deadline = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           deadline - std::chrono::system_clock::now());
  }
  return built;
}

v1::FinishReason ToProtoFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kDeadline:
      return v1::FINISH_REASON_DEADLINE;
    case FinishReason::kError:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void FillResponse(const RequestResult& result, const std::vector<int32_t>& prompt_ids,
                  bool return_prompt_ids, v1::GenerateResponse* response) {
  response->set_text(result.text);
  response->mutable_token_ids()->Assign(result.tokens.begin(), result.tokens.end());
  response->set_finish_reason(ToProtoFinishReason(result.finish_reason));
  response->mutable_usage()->set_prompt_tokens(result.prompt_tokens);
  response->mutable_usage()->set_completion_tokens(static_cast<int>(result.tokens.size()));
  response->mutable_timings()->set_queued_seconds(result.queued_seconds);
  response->mutable_timings()->set_first_token_seconds(result.first_token_seconds);
  response->mutable_timings()->set_total_seconds(result.total_seconds);
  if (return_prompt_ids) {
    response->mutable_prompt_ids()->Assign(prompt_ids.begin(), prompt_ids.end());
  }
}

}  // namespace loraserve::server
