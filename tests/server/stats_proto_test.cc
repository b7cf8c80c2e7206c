// GetStats' mapping: every field of the EngineStatFields() table names a numeric field of
// loraserve.v1.Stats and carries its value there.
#include "server/stats_proto.h"

#include "gtest/gtest.h"

namespace loraserve::server {
namespace {

using google::protobuf::FieldDescriptor;

TEST(StatsProtoTest, EveryTableFieldExistsInTheProtoAsANumber) {
  const google::protobuf::Descriptor* descriptor = v1::Stats::descriptor();
  for (const EngineStatField& stat : EngineStatFields()) {
    const FieldDescriptor* field = descriptor->FindFieldByName(std::string(stat.proto_field));
    ASSERT_NE(field, nullptr) << "loraserve.v1.Stats has no field " << stat.proto_field;
    EXPECT_FALSE(field->is_repeated()) << stat.proto_field;
    EXPECT_NE(field->cpp_type(), FieldDescriptor::CPPTYPE_STRING) << stat.proto_field;
    EXPECT_NE(field->cpp_type(), FieldDescriptor::CPPTYPE_MESSAGE) << stat.proto_field;
  }
}

TEST(StatsProtoTest, FillsEveryFieldWithItsValue) {
  EngineStats stats;
  stats.waiting = 1;
  stats.running = 2;
  stats.pool_pages_total = 3;
  stats.kv_pages_used = 4;
  stats.adapter_pages_used = 5;
  stats.kv_usage = 0.75;
  stats.adapters_resident = 7;
  stats.adapter_loads = 8;
  stats.adapter_evictions = 9;
  stats.adapter_hits = 10;
  stats.adapter_misses = 11;
  stats.preemptions = 12;
  stats.generated_tokens = 13;
  stats.steps = 14;
  stats.merge_switches = 17;
  stats.seconds_merged = 18.5;
  stats.seconds_unmerged = 19.5;
  stats.merge_mode = MergeMode::kNever;
  stats.merged_adapter = "x";
  stats.running_adapters = {"r1", "r2"};
  stats.waiting_adapters = {"w"};
  v1::Stats proto;
  ASSERT_TRUE(FillStatsProto(stats, &proto).ok());

  EXPECT_EQ(proto.waiting(), 1);
  EXPECT_EQ(proto.running(), 2);
  EXPECT_EQ(proto.pool_pages_total(), 3);
  EXPECT_EQ(proto.kv_pages_used(), 4);
  EXPECT_EQ(proto.adapter_pages_used(), 5);
  EXPECT_DOUBLE_EQ(proto.kv_usage(), 0.75);
  EXPECT_EQ(proto.adapters_resident(), 7);
  EXPECT_EQ(proto.adapter_loads(), 8);
  EXPECT_EQ(proto.adapter_evictions(), 9);
  EXPECT_EQ(proto.adapter_hits(), 10);
  EXPECT_EQ(proto.adapter_misses(), 11);
  EXPECT_EQ(proto.preemptions(), 12);
  EXPECT_EQ(proto.generated_tokens(), 13);
  EXPECT_EQ(proto.steps(), 14);
  EXPECT_EQ(proto.merge_switches(), 17);
  EXPECT_DOUBLE_EQ(proto.seconds_merged(), 18.5);
  EXPECT_DOUBLE_EQ(proto.seconds_unmerged(), 19.5);
  EXPECT_EQ(proto.merge_mode(), v1::MERGE_MODE_NEVER);
  EXPECT_EQ(proto.merged_adapter(), "x");
  ASSERT_EQ(proto.running_adapters_size(), 2);
  EXPECT_EQ(proto.running_adapters(1), "r2");
  ASSERT_EQ(proto.waiting_adapters_size(), 1);

  // And generically: each table field reads back its own value through reflection.
  const google::protobuf::Reflection* reflection = proto.GetReflection();
  for (const EngineStatField& stat : EngineStatFields()) {
    const FieldDescriptor* field =
        proto.GetDescriptor()->FindFieldByName(std::string(stat.proto_field));
    ASSERT_NE(field, nullptr) << stat.proto_field;
    double read = 0;
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        read = reflection->GetInt32(proto, field);
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        read = static_cast<double>(reflection->GetInt64(proto, field));
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        read = reflection->GetDouble(proto, field);
        break;
      default:
        FAIL() << stat.proto_field << " has a type this test does not read";
    }
    EXPECT_DOUBLE_EQ(read, stat.value(stats)) << stat.proto_field;
  }
}

}  // namespace
}  // namespace loraserve::server
