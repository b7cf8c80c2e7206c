// Proto <-> call mapping for Generate and GenerateStream. Field paths handed to the call are
// the proto's, so validation errors name what the client set.
#include "server/generate_proto.h"

#include <span>

#include "absl/strings/str_cat.h"

namespace loraserve::server {
namespace {

void ToProto(const TokenLogprob& logprob, const Tokenizer* tokenizer, v1::TokenLogprob* proto) {
  proto->set_token_id(logprob.token);
  proto->set_logprob(logprob.logprob);
  if (tokenizer != nullptr) {
    proto->set_text(tokenizer->Decode(std::span<const int32_t>(&logprob.token, 1),
                                      /*skip_special_tokens=*/false));
  }
}

}  // namespace

void ToProto(const TokenLogprobs& logprobs, const Tokenizer* tokenizer, v1::TokenLogprobs* proto) {
  ToProto(logprobs.chosen, tokenizer, proto->mutable_chosen());
  for (const TokenLogprob& top : logprobs.top) ToProto(top, tokenizer, proto->add_top());
}

std::vector<ChatMessage> FromProto(const v1::ChatMessages& chat) {
  std::vector<ChatMessage> messages;
  for (const v1::ChatMessage& m : chat.messages()) messages.push_back({m.role(), m.content()});
  return messages;
}

absl::StatusOr<GenerationInput> FromProto(const v1::GenerateRequest& proto,
                                          std::chrono::system_clock::time_point deadline) {
  GenerationInput input;
  switch (proto.prompt_case()) {
    case v1::GenerateRequest::kText:
      input.prompt = TextPrompt{proto.text()};
      break;
    case v1::GenerateRequest::kChat:
      input.prompt = ChatPrompt{FromProto(proto.chat())};
      break;
    case v1::GenerateRequest::kTokenIds:
      input.prompt = TokenPrompt{{proto.token_ids().ids().begin(), proto.token_ids().ids().end()}};
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError("prompt: set one of text, chat or token_ids");
  }

  if (proto.adapters_case() == v1::GenerateRequest::kAdapterId) {
    input.adapters.push_back({proto.adapter_id(), 1.0f, "adapter_id", "adapter_id"});
  } else if (proto.adapters_case() == v1::GenerateRequest::kMix) {
    for (int i = 0; i < proto.mix().adapters_size(); ++i) {
      const v1::WeightedAdapter& a = proto.mix().adapters(i);
      const std::string field = absl::StrCat("mix.adapters[", i, "]");
      input.adapters.push_back(
          {a.adapter_id(), a.weight(), field + ".adapter_id", field + ".weight"});
    }
  }

  input.max_tokens = proto.max_tokens();
  if (proto.has_sampling()) {
    const v1::SamplingParams& s = proto.sampling();
    SamplingParams& sampling = input.sampling.emplace();
    sampling.temperature = s.temperature();
    sampling.top_k = s.top_k();
    sampling.top_p = s.top_p() == 0 ? 1.0f : s.top_p();  // proto3's unset 0 means "no top-p"
    sampling.seed = s.seed();
  }
  input.stop.assign(proto.stop().begin(), proto.stop().end());
  input.ignore_eos = proto.ignore_eos();
  // OpenAI's shape: a flag, and a count of alternatives that only means something with it.
  if (proto.logprobs()) {
    if (proto.top_logprobs() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("top_logprobs: must be >= 0, got ", proto.top_logprobs()));
    }
    input.logprobs = proto.top_logprobs();
    input.fields.logprobs = "top_logprobs";
  } else if (proto.top_logprobs() != 0) {
    return absl::InvalidArgumentError("top_logprobs: set logprobs = true to get alternatives");
  }
  input.min_tokens = proto.min_tokens();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    input.deadline = std::chrono::steady_clock::now() +
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                         deadline - std::chrono::system_clock::now());
  }
  return input;
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

void FillResponse(const GenerationOutcome& outcome, bool return_prompt_ids,
                  const Tokenizer* tokenizer, v1::GenerateResponse* response) {
  response->set_text(outcome.text);
  response->mutable_token_ids()->Assign(outcome.token_ids.begin(), outcome.token_ids.end());
  response->set_finish_reason(ToProtoFinishReason(outcome.finish_reason));
  response->mutable_usage()->set_prompt_tokens(outcome.usage.prompt_tokens);
  response->mutable_usage()->set_completion_tokens(outcome.usage.completion_tokens);
  response->mutable_timings()->set_queued_seconds(outcome.timings.queued_seconds);
  response->mutable_timings()->set_first_token_seconds(outcome.timings.first_token_seconds);
  response->mutable_timings()->set_total_seconds(outcome.timings.total_seconds);
  if (return_prompt_ids) {
    response->mutable_prompt_ids()->Assign(outcome.prompt_ids.begin(), outcome.prompt_ids.end());
  }
  for (const TokenLogprobs& logprobs : outcome.logprobs) {
    ToProto(logprobs, tokenizer, response->add_logprobs());
  }
}

}  // namespace loraserve::server
