// The adapter registry: one pool key per registration, pins that belong to a registration (a
// re-upload under a pinned id starts unpinned), and NOT_FOUND / ALREADY_EXISTS naming the id.
#include "runtime/adapter_registry.h"

#include <gtest/gtest.h>

namespace loraserve {
namespace {

AdapterSummary Adapter(const std::string& id) {
  AdapterSummary summary;
  summary.id = id;
  return summary;
}

TEST(AdapterRegistryTest, EachRegistrationGetsItsOwnPoolKey) {
  AdapterRegistry registry;
  ASSERT_TRUE(registry.Register(Adapter("a"), {}).ok());
  const std::string first = *registry.PoolKey("a");
  ASSERT_TRUE(registry.Unregister("a").ok());
  ASSERT_TRUE(registry.Register(Adapter("a"), {}).ok());
  EXPECT_NE(*registry.PoolKey("a"), first);
}

TEST(AdapterRegistryTest, ReuploadUnderAPinnedIdIsNotPinned) {
  AdapterRegistry registry;
  ASSERT_TRUE(registry.Register(Adapter("a"), {}).ok());
  ASSERT_TRUE(registry.SetPinned("a", true).ok());
  ASSERT_EQ(registry.List().size(), 1u);
  EXPECT_TRUE(registry.List()[0].pinned);
  ASSERT_TRUE(registry.Unregister("a").ok());
  ASSERT_TRUE(registry.Register(Adapter("a"), {}).ok());
  EXPECT_FALSE(registry.List()[0].pinned);
}

TEST(AdapterRegistryTest, ErrorsNameTheAdapter) {
  AdapterRegistry registry;
  ASSERT_TRUE(registry.Register(Adapter("a"), {}).ok());
  const absl::Status again = registry.Register(Adapter("a"), {}).status();
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(again.message().find("'a'"), std::string::npos);
  for (absl::Status s : {registry.Unregister("zz").status(), registry.SetPinned("zz", true).status(),
                         registry.Use("zz").status()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
    EXPECT_NE(s.message().find("'zz'"), std::string::npos);
  }
  EXPECT_FALSE(registry.Contains("zz"));
  EXPECT_EQ(registry.size(), 1u);
}

TEST(AdapterRegistryTest, UseMarksTheAdapterUsed) {
  AdapterRegistry registry;
  ASSERT_TRUE(registry.Register(Adapter("a"), {}).ok());
  const auto before = registry.List()[0].last_used;
  auto used = registry.Use("a");
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(used->summary.id, "a");
  EXPECT_GE(registry.List()[0].last_used, before);
}

}  // namespace
}  // namespace loraserve
