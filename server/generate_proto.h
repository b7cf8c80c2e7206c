// The loraserve.v1 side of a generation call: GenerateRequest -> GenerationInput (structure
// only; every semantic check is GenerationCall's) and GenerationOutcome -> GenerateResponse.
#pragma once

#include <chrono>

#include "absl/status/statusor.h"
#include "proto/inference.pb.h"
#include "server/generation_call.h"
#include "server/generation_input.h"

namespace loraserve::server {

// INVALID_ARGUMENT only when the prompt oneof is unset. `deadline` is the gRPC call's
// (time_point::max() = none).
absl::StatusOr<GenerationInput> FromProto(const v1::GenerateRequest& proto,
                                          std::chrono::system_clock::time_point deadline);

std::vector<ChatMessage> FromProto(const v1::ChatMessages& chat);

v1::FinishReason ToProtoFinishReason(FinishReason reason);
// `tokenizer` (may be null) spells out each logprob's token text.
void FillResponse(const GenerationOutcome& outcome, bool return_prompt_ids,
                  const Tokenizer* tokenizer, v1::GenerateResponse* response);
void ToProto(const TokenLogprobs& logprobs, const Tokenizer* tokenizer, v1::TokenLogprobs* proto);

}  // namespace loraserve::server
