// The OpenAI HTTP transport over real loopback HTTP on the tiny model: answers equal gRPC's for
// the same request, stream framing, concurrent streams equal their solo runs, a client that
// leaves mid-stream has its request cancelled and its memory freed, and errors in OpenAI's shape.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace loraserve::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class OpenAiHttpTest : public ServerFixture {
 protected:
  void Configure(server::ServerOptions& options) override {
    options.http.listen = "127.0.0.1:0";
    options.http.served_model_name = "tiny";
  }
  httplib::Client Client() {
    httplib::Client client("127.0.0.1", server_->http_port());
    client.set_read_timeout(60, 0);
    return client;
  }
  json Post(const std::string& path, const json& body, int* status = nullptr) {
    auto client = Client();
    auto res = client.Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res) << "no response";
    if (!res) return json();
    if (status != nullptr) *status = res->status;
    return json::parse(res->body, nullptr, false);
  }
  // The data frames of a streamed response, without the "data: " prefix.
  std::vector<std::string> Stream(const std::string& path, const json& body) {
    auto client = Client();
    std::string raw;
    auto res = client.Post(path.c_str(), httplib::Headers{}, body.dump(), "application/json");
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->status, 200) << res->body;
    EXPECT_THAT(res->get_header_value("Content-Type"), StartsWith("text/event-stream"));
    std::vector<std::string> frames;
    size_t at = 0;
    while (at < res->body.size()) {
      const size_t end = res->body.find("\n\n", at);
      EXPECT_NE(end, std::string::npos) << "unterminated frame";
      if (end == std::string::npos) break;
      const std::string frame = res->body.substr(at, end - at);
      at = end + 2;
      if (frame.rfind(": ", 0) == 0) continue;  // keep-alive comment
      EXPECT_THAT(frame, StartsWith("data: "));
      frames.push_back(frame.substr(6));
    }
    return frames;
  }
  std::vector<int32_t> GrpcTokens(const std::vector<int32_t>& prompt, const std::string& adapter,
                                  int max_tokens) {
    v1::GenerateResponse response;
    grpc::Status s = Generate(Request(prompt, adapter, max_tokens), &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {response.token_ids().begin(), response.token_ids().end()};
  }
};

TEST_F(OpenAiHttpTest, GreedyCompletionEqualsGrpcWithAndWithoutAnAdapter) {
  ASSERT_TRUE(Upload("a1", AdapterFiles(base_, 1)).ok());
  const std::vector<int32_t> prompt = {5, 6, 7, 8};
  for (const std::string model : {"tiny", "a1"}) {
    json body = {{"model", model}, {"prompt", prompt}, {"max_tokens", 6},
                 {"temperature", 0},  {"ignore_eos", true}, {"logprobs", 0}};
    int status = 0;
    json r = Post("/v1/completions", body, &status);
    ASSERT_EQ(status, 200) << r.dump();
    EXPECT_EQ(r["model"], model);
    EXPECT_EQ(r["usage"]["completion_tokens"], 6);
    EXPECT_EQ(r["usage"]["prompt_tokens"], 4);
    const std::vector<int32_t> want = GrpcTokens(prompt, model == "tiny" ? "" : model, 6);
    std::string text;
    for (const auto& t : r["choices"][0]["logprobs"]["tokens"]) text += t.get<std::string>();
    EXPECT_EQ(text, r["choices"][0]["text"].get<std::string>());
    v1::GenerateResponse grpc_response;
    ASSERT_TRUE(Generate(Request(prompt, model == "tiny" ? "" : model, 6), &grpc_response).ok());
    EXPECT_EQ(r["choices"][0]["text"].get<std::string>(), grpc_response.text());
    EXPECT_EQ(want.size(), 6u);
  }
}

TEST_F(OpenAiHttpTest, StreamedChatHasRoleContentFinishUsageAndDone) {
  json body = {{"model", "tiny"},
               {"messages", {{{"role", "user"}, {"content", "hello"}}}},
               {"max_tokens", 5},
               {"temperature", 0},
               {"ignore_eos", true},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  const std::vector<std::string> frames = Stream("/v1/chat/completions", body);
  ASSERT_GE(frames.size(), 4u);
  EXPECT_EQ(frames.back(), "[DONE]");
  const json first = json::parse(frames[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first.contains("usage") && first["usage"].is_null());
  const json usage = json::parse(frames[frames.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 5);
  const json finish = json::parse(frames[frames.size() - 3]);
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "length");
  std::string streamed;
  for (size_t i = 1; i + 3 < frames.size(); ++i) {
    const json chunk = json::parse(frames[i]);
    EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
    streamed += chunk["choices"][0]["delta"]["content"].get<std::string>();
  }
  body.erase("stream");
  body.erase("stream_options");
  json plain = Post("/v1/chat/completions", body);
  EXPECT_EQ(streamed, plain["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_EQ(first["id"], finish["id"]);
}

TEST_F(OpenAiHttpTest, ConcurrentStreamsOverAdaptersEqualTheirSoloRuns) {
  ASSERT_TRUE(Upload("a1", AdapterFiles(base_, 1)).ok());
  ASSERT_TRUE(Upload("a2", AdapterFiles(base_, 2)).ok());
  const std::vector<std::string> models = {"tiny", "a1", "a2"};
  auto body = [&](int i) {
    return json{{"model", models[i % 3]}, {"prompt", {3 + i, 9, 11}}, {"max_tokens", 8},
                {"temperature", 0},       {"ignore_eos", true},       {"stream", true}};
  };
  auto text_of = [](const std::vector<std::string>& frames) {
    std::string text;
    for (const std::string& f : frames) {
      if (f == "[DONE]") continue;
      text += json::parse(f)["choices"][0]["text"].get<std::string>();
    }
    return text;
  };
  constexpr int kRequests = 12;
  std::vector<std::string> solo(kRequests), together(kRequests);
  for (int i = 0; i < kRequests; ++i) solo[i] = text_of(Stream("/v1/completions", body(i)));
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] { together[i] = text_of(Stream("/v1/completions", body(i))); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(together, solo);
}

TEST_F(OpenAiHttpTest, ClientLeavingMidStreamCancelsAndFreesTheRequest) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->http_port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string body = json{{"model", "tiny"}, {"prompt", {1, 2, 3}}, {"max_tokens", 1500},
                                {"ignore_eos", true}, {"stream", true}}
                               .dump();
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                              "application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string got;
  char buffer[4096];
  while (got.find("data: ") == std::string::npos) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    ASSERT_GT(n, 0);
    got.append(buffer, static_cast<size_t>(n));
  }
  // The step that streamed the first token publishes its statistics only after the token went
  // out, so the frame can arrive first: wait for them (the request runs for 1500 tokens).
  const auto published = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server_->engine()->Stats().running == 0 && std::chrono::steady_clock::now() < published) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GT(server_->engine()->Stats().running, 0);
  close(fd);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  EngineStats stats;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stats = server_->engine()->Stats();
  } while ((stats.running > 0 || stats.kv_pages_used > 0) &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.kv_pages_used, 0);
  EXPECT_LT(stats.generated_tokens, 1500);
  EXPECT_THAT(server_->state().metrics().Scrape(server_->engine(), 128, 0),
              HasSubstr("status=\"CANCELLED\"} 1"));
}

TEST_F(OpenAiHttpTest, ErrorsComeInOpenAiShapeWithTheRightStatus) {
  int status = 0;
  json r = Post("/v1/completions", {{"model", "nope"}, {"prompt", "x"}}, &status);
  EXPECT_EQ(status, 404);
  EXPECT_EQ(r["error"]["type"], "NotFoundError");
  EXPECT_EQ(r["error"]["param"], "model");
  EXPECT_EQ(r["error"]["code"], 404);
  r = Post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", "many"}},
           &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(r["error"]["param"], "max_tokens");
  r = Post("/v1/completions",
           {{"model", "tiny"}, {"prompt", std::vector<int>(base_.max_position_embeddings, 3)}},
           &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(r["error"]["param"], "prompt");
  auto client = Client();
  auto res = client.Post("/v1/chat/completions", "{not json", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  res = client.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_THAT(res->body, HasSubstr("vllm:num_requests_waiting{engine=\"0\",model_name=\"tiny\"}"));
  res = client.Get("/v1/models");
  ASSERT_TRUE(res);
  json models = json::parse(res->body);
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_TRUE(models["data"][0]["parent"].is_null());
  // A drained server: /health 503, generation 503 with retry-after.
  server_->state().SetDraining();
  res = client.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  res = client.Post("/v1/completions", json{{"model", "tiny"}, {"prompt", "x"}}.dump(),
                    "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->get_header_value("retry-after"), "1");
}

}  // namespace
}  // namespace loraserve::testing
