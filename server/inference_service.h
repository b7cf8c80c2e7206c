// The loraserve.v1.Inference service on gRPC's callback API. Generate and GenerateStream are
// reactors that map the proto onto a GenerationCall (server/generation_call.h) and its sink onto
// proto writes, so no thread waits per request; Tokenize and GetModelInfo answer inline.
#pragma once

#include "proto/inference.grpc.pb.h"
#include "server/bearer_auth.h"
#include "server/serving_state.h"

namespace loraserve::server {

class InferenceService final : public v1::Inference::CallbackService {
 public:
  InferenceService(ServingState* state, const BearerAuth* auth) : state_(state), auth_(auth) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  ServingState* const state_;
  const BearerAuth* const auth_;
};

}  // namespace loraserve::server
