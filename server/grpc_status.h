// The one place where absl::Status becomes a gRPC status: every service handler returns
// through ToGrpcStatus, so a code means the same thing on every RPC.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace loraserve::server {

grpc::Status ToGrpcStatus(const absl::Status& status);
// "OK", "NOT_FOUND", ...: the metrics label of a finished call.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace loraserve::server
