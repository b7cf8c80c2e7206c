// Turns proto requests into engine requests (prompt rendering and tokenization, adapter
// references, sampling) and engine results into proto responses. Validation errors are
// INVALID_ARGUMENT naming the proto field.
#pragma once

#include <chrono>
#include <string>

#include "absl/status/statusor.h"
#include "proto/inference.pb.h"
#include "runtime/engine.h"
#include "runtime/tokenizer/tokenizer.h"

namespace loraserve::server {

struct BuiltRequest {
  GenerationRequest request;
  // Metrics label: "" (base), the adapter id, or ids joined with '+'.
  std::string adapter_label;
};

absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::GenerateRequest& proto,
                                               const Tokenizer* tokenizer);

absl::StatusOr<BuiltRequest> BuildGenerationRequest(
    const v1::GenerateRequest& proto, const Tokenizer* tokenizer, const ModelConfig& model,
    int default_max_tokens, std::chrono::system_clock::time_point deadline);

v1::FinishReason ToProtoFinishReason(FinishReason reason);
void FillResponse(const RequestResult& result, const std::vector<int32_t>& prompt_ids,
                  bool return_prompt_ids, v1::GenerateResponse* response);

// Renders chat messages with the model's chat template; names `field` in errors.
absl::StatusOr<std::string> RenderChat(const v1::ChatMessages& chat, const Tokenizer* tokenizer,
                                       const std::string& field);

}  // namespace loraserve::server
