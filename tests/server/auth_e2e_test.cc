// Authentication of the real server on loopback. Every method of loraserve.v1.Admin and
// loraserve.v1.Inference is taken from the generated service descriptors, so an RPC added later
// is covered without editing this file: each refuses a missing, wrong or other-API token with
// UNAUTHENTICATED (PERMISSION_DENIED when the admin API is off), and so do the admin HTTP routes
// and the HTTP inference routes. No token ever reaches a log line or an error message.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>
#include <grpc/support/log.h>
#include <httplib.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <map>
#include <mutex>

#include "gmock/gmock.h"
#include "tests/server/raw_grpc_call.h"
#include "tests/server/server_test_util.h"

namespace loraserve::testing {
namespace {

using google::protobuf::MethodDescriptor;
using google::protobuf::ServiceDescriptor;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kInferenceToken[] = "test-inference-token-8c1f";
constexpr char kWrongToken[] = "test-wrong-token-77aa";

// Everything the process logs while a test runs: the server's log callback, spdlog (the HTTP
// layer and the CLI log there) and gRPC's own gpr_log. Guarded: they log from many threads.
class LogCapture {
 public:
  static LogCapture& Get() {
    static LogCapture* capture = new LogCapture();
    return *capture;
  }
  void Add(const std::string& line) {
    std::lock_guard lock(mutex_);
    text_ += line;
    text_ += '\n';
  }
  std::string Text() {
    std::lock_guard lock(mutex_);
    return text_;
  }
  // Routes spdlog's default logger and gRPC's logging here, at their most verbose.
  void Install() {
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("capture", std::make_shared<Sink>()));
    spdlog::set_level(spdlog::level::trace);
    gpr_set_log_verbosity(GPR_LOG_SEVERITY_DEBUG);
    gpr_set_log_function([](gpr_log_func_args* args) {
      LogCapture::Get().Add(args->message);
      std::fprintf(stderr, "grpc: %s\n", args->message);
    });
  }

 private:
  class Sink final : public spdlog::sinks::base_sink<std::mutex> {
   protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
      spdlog::memory_buf_t formatted;
      formatter_->format(msg, formatted);
      LogCapture::Get().Add(fmt::to_string(formatted));
    }
    void flush_() override {}
  };
  std::mutex mutex_;  // guards text_
  std::string text_;
};

// A minimal, valid-shaped request per method (text format of its input type); a method missing
// here is still called, with an empty request: authentication comes before any field is read.
std::map<std::string, std::string> AdminRequests(const std::string& load_root) {
  return {
      {"UploadAdapter", R"(header { adapter_id: "probe" })"},
      {"LoadAdapter", R"(adapter_id: "probe" path: ")" + load_root + R"(/probe")"},
      {"UnloadAdapter", R"(adapter_id: "present")"},
      {"ListAdapters", ""},
      {"PinAdapter", R"(adapter_id: "present" pinned: true)"},
      {"FuseAdapters",
       R"(new_adapter_id: "probe" sources { adapter_id: "present" weight: 1 } method: FUSE_METHOD_CAT)"},
      {"SetMergeMode", "mode: MERGE_MODE_NEVER"},
      {"GetStats", ""},
  };
}

std::map<std::string, std::string> InferenceRequests() {
  return {
      {"Generate", "token_ids { ids: [1, 2, 3] } max_tokens: 2"},
      {"GenerateStream", "token_ids { ids: [1, 2, 3] } max_tokens: 2"},
      {"Tokenize", R"(text: "hello")"},
      {"GetModelInfo", ""},
  };
}

// Serialized request for `method`: the table's text, parsed as the method's input type.
std::string RequestBytes(const MethodDescriptor& method,
                         const std::map<std::string, std::string>& table) {
  std::unique_ptr<google::protobuf::Message> message(
      google::protobuf::MessageFactory::generated_factory()
          ->GetPrototype(method.input_type())
          ->New());
  auto it = table.find(method.name());
  if (it != table.end()) {
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(it->second, message.get()))
        << method.full_name() << ": " << it->second;
  }
  return message->SerializeAsString();
}

std::string Path(const MethodDescriptor& method) {
  return "/" + method.service()->full_name() + "/" + method.name();
}

const ServiceDescriptor& AdminService() {
  return *v1::ListAdaptersRequest::descriptor()->file()->FindServiceByName("Admin");
}
const ServiceDescriptor& InferenceService() {
  return *v1::GenerateRequest::descriptor()->file()->FindServiceByName("Inference");
}

// The authorization values that must not pass an API whose token is `own`.
std::vector<std::pair<std::string, Metadata>> Refused(const std::string& own,
                                                      const std::string& other_api) {
  return {
      {"no token", {}},
      {"wrong token", {{"authorization", std::string("Bearer ") + kWrongToken}}},
      {"the other API's token", {{"authorization", "Bearer " + other_api}}},
      {"no Bearer scheme", {{"authorization", own}}},
      {"the token with a suffix", {{"authorization", "Bearer " + own + "x"}}},
      {"a prefix of the token", {{"authorization", "Bearer " + own.substr(0, own.size() - 1)}}},
      {"an empty bearer", {{"authorization", "Bearer "}}},
  };
}

class AuthE2eTest : public ServerFixture {
 protected:
  void SetUp() override {
    LogCapture::Get().Install();
    ServerFixture::SetUp();
  }
  void Configure(server::ServerOptions& options) override {
    options.inference_token = kInferenceToken;
    options.http.listen = "127.0.0.1:0";
    options.http.api_key = kInferenceToken;  // as `serve` defaults it
    options.log = [](const std::string& line) { LogCapture::Get().Add(line); };
  }

  std::shared_ptr<grpc::Channel> Channel() {
    return grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                               grpc::InsecureChannelCredentials());
  }
  static Metadata Bearer(const std::string& token) {
    return {{"authorization", "Bearer " + token}};
  }
  int HttpStatus(const std::string& path, const std::string& body, const std::string* token,
                 std::string* reply_body = nullptr) {
    httplib::Client client("127.0.0.1", server_->http_port());
    client.set_read_timeout(60, 0);
    httplib::Headers headers;
    if (token != nullptr) headers.emplace("Authorization", *token);
    auto res = body.empty() && path.rfind("/v1/models", 0) == 0
                   ? client.Get(path.c_str(), headers)
                   : client.Post(path.c_str(), headers, body, "application/json");
    if (!res) return -1;
    if (reply_body != nullptr) *reply_body = res->body;
    return res->status;
  }
  // Every secret the server knows or was sent, none of which may be logged or echoed.
  static std::vector<std::string> Secrets() { return {kAdminToken, kInferenceToken, kWrongToken}; }
};

TEST_F(AuthE2eTest, EveryAdminRpcRefusesWithoutTheAdminToken) {
  ASSERT_TRUE(Upload("present", AdapterFiles(base_, 1)).ok());
  WriteAdapterDir(load_root_.path() + "/probe", AdapterFiles(base_, 2));
  const ServiceDescriptor& admin = AdminService();
  const auto requests = AdminRequests(load_root_.path());
  ASSERT_GE(admin.method_count(), 8);
  auto channel = Channel();
  for (int m = 0; m < admin.method_count(); ++m) {
    const MethodDescriptor& method = *admin.method(m);
    const std::string bytes = RequestBytes(method, requests);
    for (const auto& [what, metadata] : Refused(kAdminToken, kInferenceToken)) {
      const RawCallResult r = CallRaw(channel, Path(method), bytes, metadata);
      EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << method.full_name() << " with " << what << ": " << r.status.error_message();
      EXPECT_EQ(r.responses, 0) << method.full_name() << " with " << what;
      for (const std::string& secret : Secrets()) {
        EXPECT_THAT(r.status.error_message(), Not(HasSubstr(secret))) << method.full_name();
      }
    }
  }
  // Nothing changed: no upload, load, unload, fusion, pin or merge-mode switch got through.
  EXPECT_EQ(ListIds(), std::vector<std::string>{"present"});
  EXPECT_EQ(StoreEntries(), std::vector<std::string>{"present"});
  EXPECT_EQ(server_->engine()->Stats().merge_mode, MergeMode::kAuto);
  for (const AdapterInfo& info : server_->engine()->ListAdapters()) EXPECT_FALSE(info.pinned);

  // The admin token passes every method (the control: the refusals above were about the token).
  for (int m = 0; m < admin.method_count(); ++m) {
    const MethodDescriptor& method = *admin.method(m);
    const RawCallResult r =
        CallRaw(channel, Path(method), RequestBytes(method, requests), Bearer(kAdminToken));
    EXPECT_NE(r.status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << method.full_name();
    EXPECT_NE(r.status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << method.full_name();
    // A lower-case scheme is accepted too (RFC 7235: the scheme is case-insensitive).
    if (method.name() == "ListAdapters") {
      EXPECT_TRUE(CallRaw(channel, Path(method), "",
                          {{"authorization", std::string("bearer ") + kAdminToken}})
                      .status.ok());
    }
  }
}

TEST_F(AuthE2eTest, EveryInferenceRpcRefusesWithoutTheInferenceToken) {
  const ServiceDescriptor& inference = InferenceService();
  const auto requests = InferenceRequests();
  ASSERT_GE(inference.method_count(), 4);
  auto channel = Channel();
  for (int m = 0; m < inference.method_count(); ++m) {
    const MethodDescriptor& method = *inference.method(m);
    const std::string bytes = RequestBytes(method, requests);
    for (const auto& [what, metadata] : Refused(kInferenceToken, kAdminToken)) {
      const RawCallResult r = CallRaw(channel, Path(method), bytes, metadata);
      EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << method.full_name() << " with " << what << ": " << r.status.error_message();
      EXPECT_EQ(r.responses, 0) << method.full_name() << " with " << what;
    }
    const RawCallResult ok = CallRaw(channel, Path(method), bytes, Bearer(kInferenceToken));
    EXPECT_TRUE(ok.status.ok()) << method.full_name() << ": " << ok.status.error_message();
    EXPECT_GE(ok.responses, 1) << method.full_name();
  }
}

TEST_F(AuthE2eTest, AdminAndInferenceHttpRoutesRefuseWithoutTheirToken) {
  WriteAdapterDir(load_root_.path() + "/probe", AdapterFiles(base_, 2));
  const std::string load =
      nlohmann::json{{"lora_name", "probe"}, {"lora_path", load_root_.path() + "/probe"}}.dump();
  const std::string unload = nlohmann::json{{"lora_name", "probe"}}.dump();
  const std::vector<std::pair<std::string, std::optional<std::string>>> refused = {
      {"no token", std::nullopt},
      {"wrong token", std::string("Bearer ") + kWrongToken},
      {"the API key", std::string("Bearer ") + kInferenceToken},
      {"no Bearer scheme", std::string(kAdminToken)},
      {"token prefix", "Bearer test-admin"},
  };
  for (const auto& [path, body] : std::vector<std::pair<std::string, std::string>>{
           {"/v1/load_lora_adapter", load}, {"/v1/unload_lora_adapter", unload}}) {
    for (const auto& [what, header] : refused) {
      std::string reply;
      EXPECT_EQ(HttpStatus(path, body, header ? &*header : nullptr, &reply), 401)
          << path << " with " << what;
      for (const std::string& secret : Secrets()) EXPECT_THAT(reply, Not(HasSubstr(secret)));
    }
  }
  EXPECT_TRUE(ListIds().empty()) << "a refused load registered the adapter";

  const std::string admin = std::string("Bearer ") + kAdminToken;
  EXPECT_EQ(HttpStatus("/v1/load_lora_adapter", load, &admin), 200);
  EXPECT_EQ(HttpStatus("/v1/unload_lora_adapter", unload, &admin), 200);

  // Inference routes take the API key, and the admin token is not it.
  const std::string completion =
      nlohmann::json{{"model", TinyModelDir()}, {"prompt", {1, 2, 3}}, {"max_tokens", 1}}.dump();
  const std::string chat = nlohmann::json{
      {"model", TinyModelDir()},
      {"messages", {{{"role", "user"}, {"content", "hi"}}}},
      {"max_tokens", 1}}.dump();
  const std::string key = std::string("Bearer ") + kInferenceToken;
  for (const auto& [path, body] :
       std::vector<std::pair<std::string, std::string>>{{"/v1/completions", completion},
                                                        {"/v1/chat/completions", chat},
                                                        {"/v1/models", ""},
                                                        {"/v1/models/x", ""}}) {
    EXPECT_EQ(HttpStatus(path, body, nullptr), 401) << path;
    EXPECT_EQ(HttpStatus(path, body, &admin), 401) << path;
    const int with_key = HttpStatus(path, body, &key);
    EXPECT_TRUE(with_key == 200 || with_key == 404) << path << ": " << with_key;
  }
}

TEST_F(AuthE2eTest, TokensNeverReachTheLogs) {
  ASSERT_TRUE(Upload("logged", AdapterFiles(base_, 3)).ok());  // a successful admin call
  auto channel = Channel();
  const auto requests = InferenceRequests();
  const MethodDescriptor& generate = *InferenceService().FindMethodByName("Generate");
  for (const Metadata& metadata :
       {Bearer(kInferenceToken), Bearer(kWrongToken), Bearer(kAdminToken), Metadata{}}) {
    CallRaw(channel, Path(generate), RequestBytes(generate, requests), metadata);
  }
  const MethodDescriptor& list = *AdminService().FindMethodByName("ListAdapters");
  for (const Metadata& metadata :
       {Bearer(kAdminToken), Bearer(kWrongToken), Bearer(kInferenceToken)}) {
    CallRaw(channel, Path(list), "", metadata);
  }
  const std::string admin = std::string("Bearer ") + kAdminToken;
  const std::string wrong = std::string("Bearer ") + kWrongToken;
  WriteAdapterDir(load_root_.path() + "/logged-http", AdapterFiles(base_, 4));
  const std::string load = nlohmann::json{{"lora_name", "logged-http"},
                                          {"lora_path", load_root_.path() + "/logged-http"}}
                               .dump();
  EXPECT_EQ(HttpStatus("/v1/load_lora_adapter", load, &wrong), 401);
  EXPECT_EQ(HttpStatus("/v1/load_lora_adapter", load, &admin), 200);
  server_->Shutdown(std::chrono::seconds(5));  // shutdown logging included

  const std::string logs = LogCapture::Get().Text();
  EXPECT_THAT(logs, HasSubstr("serving")) << "the capture saw the server's log";
  EXPECT_THAT(logs, HasSubstr("/v1/load_lora_adapter")) << "the capture saw spdlog";
  for (const std::string& secret : Secrets()) {
    EXPECT_THAT(logs, Not(HasSubstr(secret))) << "a token was logged";
  }
}

// Without an admin token the admin API is off: every method (and the HTTP routes) answers
// PERMISSION_DENIED / 403, whatever the caller sends.
class AdminDisabledTest : public ServerFixture {
 protected:
  void Configure(server::ServerOptions& options) override {
    options.admin_token.clear();
    options.http.listen = "127.0.0.1:0";
  }
};

TEST_F(AdminDisabledTest, EveryAdminRpcIsPermissionDenied) {
  const ServiceDescriptor& admin = AdminService();
  const auto requests = AdminRequests(load_root_.path());
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                     grpc::InsecureChannelCredentials());
  for (int m = 0; m < admin.method_count(); ++m) {
    const MethodDescriptor& method = *admin.method(m);
    for (const Metadata& metadata :
         {Metadata{}, Metadata{{"authorization", "Bearer "}},
          Metadata{{"authorization", std::string("Bearer ") + kAdminToken}}}) {
      const RawCallResult r =
          CallRaw(channel, Path(method), RequestBytes(method, requests), metadata);
      EXPECT_EQ(r.status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << method.full_name();
    }
  }
  httplib::Client client("127.0.0.1", server_->http_port());
  for (const char* path : {"/v1/load_lora_adapter", "/v1/unload_lora_adapter"}) {
    auto res = client.Post(path, httplib::Headers{{"Authorization", "Bearer "}},
                           R"({"lora_name": "x", "lora_path": "/"})", "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 403) << path;
  }
}

}  // namespace
}  // namespace loraserve::testing
