// EngineStats -> loraserve.v1.Stats: the numeric fields by looping over EngineStatFields() and
// setting each proto field by name through reflection, the rest (merge mode, adapter lists) by
// hand. A table name missing from the proto is INTERNAL, and a unit test catches it first.
#pragma once

#include "absl/status/status.h"
#include "proto/admin.pb.h"
#include "runtime/engine_stats.h"

namespace loraserve::server {

absl::Status FillStatsProto(const EngineStats& stats, v1::Stats* out);

v1::MergeMode ToProtoMergeMode(MergeMode mode);

}  // namespace loraserve::server
