// Bearer-token checks: missing and wrong tokens are UNAUTHENTICATED, a disabled API is
// PERMISSION_DENIED, the constant-time comparison is exact equality, and the token sources
// resolve in flag > env > file order.
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

TEST(BearerAuthTest, ConstantTimeEqualsIsExactEquality) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("s3cret", "s3cret"));
  const std::string with_nul("a\0b", 3);
  EXPECT_TRUE(ConstantTimeEquals(with_nul, std::string("a\0b", 3)));
  // Same length, differing in the first, a middle or the last byte, or only in case.
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "x3cret"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "s3xret"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "s3creu"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "S3CRET"));
  EXPECT_FALSE(ConstantTimeEquals(with_nul, std::string("a\0c", 3)));
  // Lengths differ: prefixes, extensions and the empty string never match (a C-string compare
  // would stop at the NUL and call "a" equal to "a\0b").
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "s3cre"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "s3cret "));
  EXPECT_FALSE(ConstantTimeEquals("", "s"));
  EXPECT_FALSE(ConstantTimeEquals("s", ""));
  EXPECT_FALSE(ConstantTimeEquals("a", with_nul));
  // Long tokens, one bit apart at the end.
  std::string a(4096, 'k'), b = a;
  b.back() ^= 1;
  EXPECT_TRUE(ConstantTimeEquals(a, std::string(4096, 'k')));
  EXPECT_FALSE(ConstantTimeEquals(a, b));
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
