// Reflection keeps the admin proto in step with runtime/engine_stats.cc's table: a statistic
// added there reaches GetStats with no code here, provided the proto has a field of that name.
#include "server/stats_proto.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace loraserve::server {

using google::protobuf::FieldDescriptor;

v1::MergeMode ToProtoMergeMode(MergeMode mode) {
  switch (mode) {
    case MergeMode::kAuto:
      return v1::MERGE_MODE_AUTO;
    case MergeMode::kNever:
      return v1::MERGE_MODE_NEVER;
    case MergeMode::kForced:
      return v1::MERGE_MODE_FORCED;
  }
  return v1::MERGE_MODE_UNSPECIFIED;
}

absl::Status FillStatsProto(const EngineStats& stats, v1::Stats* out) {
  const google::protobuf::Descriptor* descriptor = out->GetDescriptor();
  const google::protobuf::Reflection* reflection = out->GetReflection();
  for (const EngineStatField& stat : EngineStatFields()) {
    const std::string name(stat.proto_field);  // absl::string_view is not std's here
    const FieldDescriptor* field = descriptor->FindFieldByName(name);
    if (field == nullptr || field->is_repeated()) {
      return absl::InternalError(absl::StrCat(
          "loraserve.v1.Stats has no singular field '", name,
          "' named by runtime/engine_stats.cc: add it to proto/admin.proto or fix the table"));
    }
    const double value = stat.value(stats);
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        reflection->SetInt32(out, field, static_cast<int32_t>(std::llround(value)));
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        reflection->SetInt64(out, field, std::llround(value));
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        reflection->SetUInt32(out, field, static_cast<uint32_t>(std::llround(value)));
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        reflection->SetUInt64(out, field, static_cast<uint64_t>(std::llround(value)));
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        reflection->SetDouble(out, field, value);
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        reflection->SetFloat(out, field, static_cast<float>(value));
        break;
      default:
        return absl::InternalError(
            absl::StrCat("loraserve.v1.Stats.", name, " is not a number; engine statistics are"));
    }
  }
  out->set_merge_mode(ToProtoMergeMode(stats.merge_mode));
  out->set_merged_adapter(stats.merged_adapter);
  for (const auto& id : stats.running_adapters) out->add_running_adapters(id);
  for (const auto& id : stats.waiting_adapters) out->add_waiting_adapters(id);
  return absl::OkStatus();
}

}  // namespace loraserve::server
