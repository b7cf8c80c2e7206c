// The loraserve.v1.Inference service on gRPC's callback API: each call is a reactor that
// submits to the engine and finishes from the engine's callbacks, so no thread waits per
// request. Client cancellation and deadlines reach Engine::Cancel / GenerationRequest.deadline.
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
