// The HTTP listener: the OpenAI API (/v1/completions, /v1/chat/completions with server-sent
// events, /v1/models), vLLM's runtime LoRA endpoints, /health (503 until the model is loaded and
// while draining), /ping, and /metrics (open and cheap: the endpoint picker scrapes it every
// 50 ms). It binds before the model loads, like the gRPC port, so probes see 503 rather than a
// refused connection. It owns its threads; destroying it stops and joins them.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/bearer_auth.h"
#include "server/http/http_options.h"
#include "server/http/lora_routes.h"
#include "server/http/openai_request.h"
#include "server/serving_state.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace loraserve::server::http {

class OpenAiHttpServer {
 public:
  // `model_dir` is the --model path (the base card's root, and the default served name);
  // `admin_token` guards the LoRA endpoints; `metrics` renders the exposition per scrape.
  static absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> Start(
      HttpOptions options, std::string model_dir, std::string admin_token, ServingState* state,
      std::function<std::string()> metrics);
  ~OpenAiHttpServer();
  int port() const { return port_; }
  const std::string& served_model_name() const { return served_name_; }

 private:
  OpenAiHttpServer(HttpOptions options, std::string model_dir, std::string admin_token,
                   ServingState* state, std::function<std::string()> metrics);
  void Routes();
  void Generate(ApiKind kind, const httplib::Request& req, httplib::Response& res);
  void Models(const httplib::Request& req, httplib::Response& res, const std::string* id);
  void LoraUpdate(bool load, const httplib::Request& req, httplib::Response& res);
  // 401 for /v1/* without the API key; true when the request may proceed.
  bool Authorized(const httplib::Request& req, httplib::Response& res);

  const HttpOptions options_;
  const std::string model_dir_;
  const std::string served_name_;
  ServingState* const state_;
  const std::function<std::string()> metrics_;
  BearerAuth api_auth_;
  BearerAuth admin_auth_;
  LoraRoutes lora_;
  const int64_t created_unix_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace loraserve::server::http
