// The explicit limits of the gRPC API, end to end: message size, metadata size, the prompt
// against the context, stop strings (count and bytes) and the adapters of one mix. Each answer
// is the documented status with a message naming the field or the flag, and the server keeps
// serving after it.
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "tests/server/server_test_util.h"

namespace loraserve::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class GrpcLimitsTest : public ServerFixture {
 protected:
  void Configure(server::ServerOptions& options) override {
    options.max_message_bytes = 1 << 20;
    options.max_metadata_bytes = 8 << 10;
  }
  void ExpectStillServing() {
    v1::GenerateResponse response;
    const grpc::Status s = Generate(Request({1, 2, 3}, "", 3), &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.token_ids_size(), 3);
  }
};

TEST_F(GrpcLimitsTest, MessagesAboveMaxMessageBytesAreResourceExhausted) {
  v1::GenerateRequest big = Request({1, 2, 3}, "", 2);
  big.add_stop(std::string(2 << 20, 'x'));
  v1::GenerateResponse response;
  const grpc::Status s = Generate(big, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  ExpectStillServing();
}

TEST_F(GrpcLimitsTest, MetadataAboveMaxMetadataBytesIsRefusedBeforeAnyHandler) {
  auto handled = [&] {
    return server_->state().metrics().registry().Render().find("loraserve_requests_total{") !=
           std::string::npos;
  };
  v1::GenerateResponse response;
  {
    grpc::ClientContext context;
    context.AddMetadata("x-padding", std::string(32 << 10, 'p'));
    const grpc::Status s = inference_->Generate(&context, Request({1, 2, 3}, "", 2), &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  }
  {
    // Many small entries count together. gRPC refuses the stream, or resets the whole connection
    // when the excess shows mid-header-block, which the client sees as UNAVAILABLE.
    grpc::ClientContext context;
    for (int i = 0; i < 400; ++i)
      context.AddMetadata(absl::StrCat("x-entry-", i), std::string(64, 'v'));
    const grpc::Status s = inference_->Generate(&context, Request({1, 2, 3}, "", 2), &response);
    EXPECT_TRUE(s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                s.error_code() == grpc::StatusCode::UNAVAILABLE)
        << s.error_code() << ": " << s.error_message();
  }
  EXPECT_FALSE(handled()) << "a call with too much metadata reached the handler";
  {
    // The connection reset above can still be closing under the channel: a call that lands on
    // it fails UNAVAILABLE ("Broken pipe", "Socket closed"; 2 in 30 runs) and the next one gets
    // a fresh connection. Retry that, and only that, a few times.
    grpc::Status s;
    for (int attempt = 0; attempt < 5; ++attempt) {
      grpc::ClientContext context;
      context.AddMetadata("x-padding", std::string(4 << 10, 'p'));  // under the 8 KiB limit
      context.set_wait_for_ready(true);
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      s = inference_->Generate(&context, Request({1, 2, 3}, "", 2), &response);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    }
    EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  }
  ExpectStillServing();
}

TEST_F(GrpcLimitsTest, RequestFieldLimitsNameTheField) {
  struct Case {
    v1::GenerateRequest request;
    std::string prefix;
  };
  std::vector<Case> cases;
  cases.push_back({Request(std::vector<int32_t>(base_.max_position_embeddings, 5), "", 1),
                   "token_ids.ids: the prompt has " +
                       std::to_string(base_.max_position_embeddings) + " tokens"});
  cases.push_back({Request({1, 2, 3}, "", 2), "stop: at most 16 stop strings, got 17"});
  for (int i = 0; i < 17; ++i) cases.back().request.add_stop(absl::StrCat("s", i));
  cases.push_back({Request({1, 2, 3}, "", 2), "stop[0]: at most 256 bytes, got 257"});
  cases.back().request.add_stop(std::string(257, 's'));
  cases.push_back({Request({1, 2, 3}, "", 2), "mix.adapters: at most 16 adapters"});
  for (int i = 0; i < 17; ++i) {
    auto* a = cases.back().request.mutable_mix()->add_adapters();
    a->set_adapter_id(absl::StrCat("a", i));
    a->set_weight(1);
  }
  for (const Case& c : cases) {
    v1::GenerateResponse response;
    const grpc::Status s = Generate(c.request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.prefix;
    EXPECT_THAT(s.error_message(), StartsWith(c.prefix));
  }
  // At the limits themselves, the request runs.
  v1::GenerateRequest at_limit = Request({1, 2, 3}, "", 2);
  for (int i = 0; i < 16; ++i) at_limit.add_stop(std::string(256, static_cast<char>('a' + i)));
  v1::GenerateResponse response;
  const grpc::Status s = Generate(at_limit, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  ExpectStillServing();
}

TEST_F(GrpcLimitsTest, UploadsAboveMaxUploadBytesAreRefusedFromTheDeclaredSize) {
  // The fixture's --max-upload-bytes is 1 MiB: a header declaring more is refused at once.
  grpc::ClientContext context;
  Authorize(&context);
  v1::AdapterStatus status;
  auto writer = admin_->UploadAdapter(&context, &status);
  v1::UploadAdapterRequest header;
  header.mutable_header()->set_adapter_id("big");
  header.mutable_header()->set_total_bytes(2 << 20);
  writer->Write(header);
  writer->WritesDone();
  const grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("--max-upload-bytes"));
  EXPECT_TRUE(ListIds().empty());
}

}  // namespace
}  // namespace loraserve::testing
