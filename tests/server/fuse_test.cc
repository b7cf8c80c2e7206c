// Admin FuseAdapters on the real server: the fused adapter is stored, listed and served, a
// request-time weighted mix gives the same greedy tokens as the offline fused adapter, and bad
// requests get the documented status codes without touching the store.
#include "gmock/gmock.h"
#include "tests/server/server_test_util.h"

namespace loraserve::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

class FuseTest : public ServerFixture {
 protected:
  // A low rank limit, so a cat of a few small sources exceeds it.
  void Configure(server::ServerOptions& options) override { options.adapters.limits.max_rank = 64; }

  grpc::Status Fuse(const std::string& id,
                    const std::vector<std::pair<std::string, float>>& sources,
                    v1::FuseMethod method, v1::AdapterStatus* out = nullptr, int rank = 0,
                    float density = 0) {
    v1::FuseAdaptersRequest request;
    request.set_new_adapter_id(id);
    for (const auto& [adapter, weight] : sources) {
      v1::FuseSource* source = request.add_sources();
      source->set_adapter_id(adapter);
      source->set_weight(weight);
    }
    request.set_method(method);
    request.set_rank(rank);
    request.set_density(density);
    grpc::ClientContext context;
    Authorize(&context);
    v1::AdapterStatus response;
    grpc::Status status = admin_->FuseAdapters(&context, request, &response);
    if (out != nullptr) *out = response;
    return status;
  }

  static std::vector<int32_t> Prompt(int i) { return {1, 17 + i, 42, 7 * i + 3, 99, 250 - i, 5}; }

  std::vector<int32_t> Tokens(const v1::GenerateRequest& request) {
    v1::GenerateResponse response;
    const grpc::Status status = Generate(request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return {response.token_ids().begin(), response.token_ids().end()};
  }

  static v1::GenerateRequest MixRequest(std::vector<int32_t> ids,
                                        const std::vector<std::pair<std::string, float>>& mix,
                                        int max_tokens) {
    v1::GenerateRequest request = Request(std::move(ids), "", max_tokens);
    for (const auto& [adapter, weight] : mix) {
      v1::WeightedAdapter* entry = request.mutable_mix()->add_adapters();
      entry->set_adapter_id(adapter);
      entry->set_weight(weight);
    }
    return request;
  }
};

// Issue 6's acceptance point. `cat` is used because the sources have different ranks (4 and
// 8): `linear` would refuse them, and even at equal ranks it sums A and B separately, adding
// cross terms B_a A_b; cat is exactly the weighted sum of the deltas the request-time mix
// applies, so the greedy tokens must agree.
TEST_F(FuseTest, RequestTimeMixMatchesOfflineCatFusion) {
  ASSERT_TRUE(Upload("a", AdapterFiles(base_, 11, 4)).ok());
  ASSERT_TRUE(Upload("b", AdapterFiles(base_, 12, 8)).ok());
  const std::vector<std::pair<std::string, float>> mix = {{"a", 0.6f}, {"b", 0.4f}};
  v1::AdapterStatus fused;
  const grpc::Status status = Fuse("ab_cat", mix, v1::FUSE_METHOD_CAT, &fused);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(fused.id(), "ab_cat");
  EXPECT_EQ(fused.rank(), 12);
  EXPECT_THAT(ListIds(), Contains("ab_cat"));
  EXPECT_THAT(StoreEntries(), Contains("ab_cat"));

  for (int p = 0; p < 3; ++p) {
    const std::vector<int32_t> mixed = Tokens(MixRequest(Prompt(p), mix, 16));
    const std::vector<int32_t> offline = Tokens(Request(Prompt(p), "ab_cat", 16));
    EXPECT_EQ(mixed, offline) << "prompt " << p;
    EXPECT_NE(offline, Tokens(Request(Prompt(p), "", 16))) << "the fusion changes nothing";
  }
}

TEST_F(FuseTest, SvdAndTiesResultsAreServed) {
  ASSERT_TRUE(Upload("a", AdapterFiles(base_, 21, 4)).ok());
  ASSERT_TRUE(Upload("b", AdapterFiles(base_, 22, 4)).ok());
  v1::AdapterStatus svd;
  ASSERT_TRUE(Fuse("ab_svd", {{"a", 0.5f}, {"b", 0.5f}}, v1::FUSE_METHOD_SVD, &svd, 6).ok());
  EXPECT_EQ(svd.rank(), 6);
  v1::AdapterStatus ties;
  const grpc::Status status =
      Fuse("ab_ties", {{"a", 0.5f}, {"b", 0.5f}}, v1::FUSE_METHOD_TIES, &ties, 0, 0.5f);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(ties.rank(), 4);
  EXPECT_EQ(Tokens(Request(Prompt(0), "ab_svd", 8)).size(), 8u);
  EXPECT_EQ(Tokens(Request(Prompt(0), "ab_ties", 8)).size(), 8u);
}

TEST_F(FuseTest, BadRequestsLeaveTheStoreUnchanged) {
  ASSERT_TRUE(Upload("a", AdapterFiles(base_, 31, 4)).ok());
  ASSERT_TRUE(Upload("b", AdapterFiles(base_, 32, 8)).ok());
  const std::vector<std::string> before = StoreEntries();

  grpc::Status s = Fuse("x", {{"a", 1.0f}, {"nope", 1.0f}}, v1::FUSE_METHOD_CAT);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("nope"));
  s = Fuse("a", {{"a", 1.0f}, {"b", 1.0f}}, v1::FUSE_METHOD_CAT);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  s = Fuse("x", {{"a", 1.0f}, {"b", 1.0f}}, v1::FUSE_METHOD_LINEAR);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("use cat"));
  s = Fuse("x", {{"a", 1.0f}, {"b", 1.0f}}, v1::FUSE_METHOD_TIES_SVD);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("density"));
  s = Fuse("x", {{"a", 1.0f}, {"b", 1.0f}}, v1::FUSE_METHOD_UNSPECIFIED);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("method"));
  s = Fuse("../x", {{"a", 1.0f}, {"b", 1.0f}}, v1::FUSE_METHOD_CAT);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Nine rank-8 sources concatenate to rank 72 > this server's maximum of 64.
  std::vector<std::pair<std::string, float>> many(9, {"b", 0.1f});
  s = Fuse("x", many, v1::FUSE_METHOD_CAT);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("svd"));

  v1::FuseAdaptersRequest request;
  request.set_new_adapter_id("x");
  grpc::ClientContext no_token;
  v1::AdapterStatus response;
  EXPECT_EQ(admin_->FuseAdapters(&no_token, request, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  EXPECT_EQ(StoreEntries(), before);
  EXPECT_THAT(ListIds(), Not(Contains("x")));
}

}  // namespace
}  // namespace loraserve::testing
