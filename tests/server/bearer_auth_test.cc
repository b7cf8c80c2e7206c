// Bearer-token checks: missing and wrong tokens are UNAUTHENTICATED, a disabled API is
// PERMISSION_DENIED, and the token sources resolve in flag > env > file order.
#include "server/bearer_auth.h"

#include <cstdlib>

#include "gtest/gtest.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve::server {
namespace {

TEST(BearerAuthTest, AcceptsOnlyTheExactToken) {
  BearerAuth auth("s3cret", true, "disabled");
  const std::string good = "Bearer s3cret", wrong = "Bearer s3creT", longer = "Bearer s3cret1";
  const std::string basic = "Basic s3cret";
  EXPECT_TRUE(auth.CheckHeader(&good).ok());
  EXPECT_EQ(auth.CheckHeader(&wrong).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader(&longer).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader(&basic).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader(nullptr).code(), absl::StatusCode::kUnauthenticated);
}

TEST(BearerAuthTest, NoTokenMeansOpenOrDisabled) {
  EXPECT_TRUE(BearerAuth("", false, "").CheckHeader(nullptr).ok());
  const absl::Status denied = BearerAuth("", true, "start with --admin-token").CheckHeader(nullptr);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(denied.message(), "start with --admin-token");
}

TEST(BearerAuthTest, ResolveTokenPrefersFlagThenEnvThenFile) {
  testing::TempDir dir;
  const std::string file = dir.path() + "/token";
  testing::WriteFile(file, "from-file\n");
  ::setenv("LORASERVE_TEST_TOKEN", "from-env", 1);
  EXPECT_EQ(*ResolveToken("from-flag", "LORASERVE_TEST_TOKEN", file), "from-flag");
  EXPECT_EQ(*ResolveToken("", "LORASERVE_TEST_TOKEN", file), "from-env");
  ::unsetenv("LORASERVE_TEST_TOKEN");
  EXPECT_EQ(*ResolveToken("", "LORASERVE_TEST_TOKEN", file), "from-file");
  EXPECT_EQ(*ResolveToken("", "LORASERVE_TEST_TOKEN", ""), "");
  EXPECT_EQ(ResolveToken("", nullptr, dir.path() + "/missing").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loraserve::server
