// The loraserve.v1.Admin service: adapter upload (client streaming), load from a server-side
// path, unload, fuse, list, pin, merge mode and statistics. Every call checks the admin bearer
// token first; the ones that touch disk or do heavy math run on the server's WorkerPool.
#pragma once

#include "proto/admin.grpc.pb.h"
#include "server/bearer_auth.h"
#include "server/serving_state.h"
#include "server/worker_pool.h"

namespace loraserve::server {

class AdminService final : public v1::Admin::CallbackService {
 public:
  // `workers` runs uploads, loads, unloads and fusions; it outlives every call it accepted.
  AdminService(ServingState* state, const BearerAuth* auth, WorkerPool* workers)
      : state_(state), auth_(auth), workers_(workers) {}

  grpc::ServerReadReactor<v1::UploadAdapterRequest>* UploadAdapter(
      grpc::CallbackServerContext* context, v1::AdapterStatus* response) override;
  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* context,
                                        const v1::LoadAdapterRequest* request,
                                        v1::AdapterStatus* response) override;
  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* context,
                                          const v1::UnloadAdapterRequest* request,
                                          v1::UnloadAdapterResponse* response) override;
  grpc::ServerUnaryReactor* ListAdapters(grpc::CallbackServerContext* context,
                                         const v1::ListAdaptersRequest* request,
                                         v1::ListAdaptersResponse* response) override;
  grpc::ServerUnaryReactor* PinAdapter(grpc::CallbackServerContext* context,
                                       const v1::PinAdapterRequest* request,
                                       v1::AdapterStatus* response) override;
  grpc::ServerUnaryReactor* FuseAdapters(grpc::CallbackServerContext* context,
                                         const v1::FuseAdaptersRequest* request,
                                         v1::AdapterStatus* response) override;
  grpc::ServerUnaryReactor* SetMergeMode(grpc::CallbackServerContext* context,
                                         const v1::SetMergeModeRequest* request,
                                         v1::SetMergeModeResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::Stats* response) override;

 private:
  ServingState* const state_;
  const BearerAuth* const auth_;
  WorkerPool* const workers_;
};

// Fills the proto view of one adapter.
void ToProto(const struct ManagedAdapter& adapter, v1::AdapterStatus* out);

}  // namespace loraserve::server
