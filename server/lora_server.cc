#include "server/lora_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace loraserve::server {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& o) {
  if (o.tls_cert.empty() && o.tls_key.empty()) {
    if (!o.tls_client_ca.empty()) {
      return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (o.tls_cert.empty() || o.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key must be given together");
  }
  auto cert = ReadPem(o.tls_cert, "--tls-cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(o.tls_key, "--tls-key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!o.tls_client_ca.empty()) {
    auto ca = ReadPem(o.tls_client_ca, "--tls-client-ca");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// Readiness (weights loaded, not draining): "" and each service's name.
constexpr const char* kServiceNames[] = {"loraserve.v1.Inference", "loraserve.v1.Admin"};
constexpr const char* kLivenessService = "liveness";

}  // namespace

LoraServer::LoraServer(ServerOptions options)
    : options_(std::move(options)),
      admin_workers_(options_.admin_threads),
      admin_auth_(options_.admin_token, /*required=*/true,
                  "the admin API is disabled: start the server with --admin-token, "
                  "--admin-token-file or LORASERVE_ADMIN_TOKEN"),
      inference_auth_(options_.inference_token, /*required=*/false, ""),
      inference_service_(&state_, &inference_auth_),
      admin_service_(&state_, &admin_auth_, &admin_workers_) {
  if (!options_.log) {
    options_.log = [](const std::string& line) { spdlog::info("{}", line); };
  }
}

absl::StatusOr<std::unique_ptr<LoraServer>> LoraServer::Start(ServerOptions options) {
  std::unique_ptr<LoraServer> server(new LoraServer(std::move(options)));
  server->admin_workers_.Start();
  if (absl::Status s = server->StartGrpc(); !s.ok()) return s;
  LoraServer* raw = server.get();
  const http::HttpOptions& http_options = server->options_.http;
  if (server->options_.vllm_metric_names) {
    server->state_.metrics().EnableVllmNames(http_options.served_model_name.empty()
                                                 ? server->options_.model_dir
                                                 : http_options.served_model_name);
  }
  if (!server->options_.metrics_listen.empty()) {
    auto metrics = MetricsHttpServer::Start(server->options_.metrics_listen,
                                            [raw] { return raw->ScrapeMetrics(); });
    if (!metrics.ok()) return metrics.status();
    server->metrics_ = *std::move(metrics);
  }
  if (!server->options_.http.listen.empty()) {
    auto http = http::OpenAiHttpServer::Start(server->options_.http, server->options_.model_dir,
                                              server->options_.admin_token, &server->state_,
                                              [raw] { return raw->ScrapeMetrics(); });
    if (!http.ok()) return http.status();
    server->http_ = *std::move(http);
  }
  if (absl::Status s = server->LoadModel(); !s.ok()) return s;
  server->SetHealth(true);
  server->options_.log(absl::StrCat("serving ", server->options_.model_dir, " on port ",
                                    server->port_, " with ", server->adapters_->registered(),
                                    " adapters"));
  return server;
}

std::string LoraServer::ScrapeMetrics() {
  ServingCore* core = state_.core();
  return state_.metrics().Scrape(core ? core->engine : nullptr,
                                 options_.engine.max_adapters_resident,
                                 core ? core->adapters->registered() : 0);
}

absl::Status LoraServer::StartGrpc() {
  auto credentials = Credentials(options_);
  if (!credentials.ok()) return credentials.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, *credentials, &port_);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, options_.max_metadata_bytes);
  builder.RegisterService(&inference_service_);
  builder.RegisterService(&admin_service_);
  grpc_ = builder.BuildAndStart();
  if (grpc_ == nullptr || port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("--listen: cannot listen on ", options_.listen, " (in use or bad address)"));
  }
  SetHealth(false);
  // Process health for a liveness probe: SERVING from bind to exit, through loading and drain.
  if (auto* health = grpc_->GetHealthCheckService(); health != nullptr) {
    health->SetServingStatus(kLivenessService, true);
  }
  return absl::OkStatus();
}

void LoraServer::SetHealth(bool serving) {
  grpc::HealthCheckServiceInterface* health = grpc_->GetHealthCheckService();
  if (health == nullptr) return;
  // The one-argument form sets every registered service, liveness included: put it back.
  health->SetServingStatus(serving);
  for (const char* name : kServiceNames) health->SetServingStatus(name, serving);
  health->SetServingStatus(kLivenessService, true);
}

absl::Status LoraServer::LoadModel() {
  auto backend = CreateBackend(options_.backend);
  if (!backend.ok()) return backend.status();
  auto model = LlamaModel::Load(options_.model_dir, std::move(backend->backend));
  if (!model.ok()) return model.status();
  options_.log(absl::StrCat("model ", options_.model_dir, " on ", backend->description, ", ",
                            (*model)->WeightBytes() >> 20, " MiB of weights"));
  const ModelConfig config = (*model)->config();
  if (std::filesystem::exists(std::filesystem::path(options_.model_dir) / "tokenizer.json")) {
    auto tokenizer = Tokenizer::FromFile(options_.model_dir);
    if (!tokenizer.ok()) return tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  } else {
    options_.log(absl::StrCat(options_.model_dir,
                              " has no tokenizer.json: only token-id prompts are accepted"));
  }
  if (!options_.store_dir.empty()) {
    AdapterStoreOptions store_options;
    auto log = options_.log;
    store_options.log = [log](std::string_view line) { log(std::string(line)); };
    store_options.verify_hashes_on_open = options_.verify_store_on_start;
    auto store = AdapterStore::Open(options_.store_dir, store_options);
    if (!store.ok()) return store.status();
    store_ = *std::move(store);
  }
  EngineOptions engine_options = options_.engine;
  engine_options.tokenizer = tokenizer_.get();
  engine_options.log_warning = options_.log;
  auto engine = Engine::Create(*std::move(model), std::move(engine_options));
  if (!engine.ok()) return engine.status();
  engine_ = *std::move(engine);
  adapters_ =
      std::make_unique<AdapterManager>(engine_.get(), store_.get(), config, options_.adapters);
  adapters_->RegisterStored(options_.log);
  if (!options_.adapter_dir.empty()) {
    if (absl::Status s = adapters_->RegisterDirectory(options_.adapter_dir, options_.log);
        !s.ok()) {
      return s;
    }
  }
  core_.engine = engine_.get();
  core_.tokenizer = tokenizer_.get();
  core_.adapters = adapters_.get();
  core_.model_path = options_.model_dir;
  core_.max_lora = options_.engine.max_adapters_resident;
  core_.default_max_tokens = options_.default_max_tokens;
  state_.SetCore(&core_);
  return absl::OkStatus();
}

bool LoraServer::Shutdown(std::chrono::steady_clock::duration drain) {
  if (shut_down_) return true;
  shut_down_ = true;
  state_.SetDraining();
  if (grpc_ != nullptr) SetHealth(false);
  const auto deadline = std::chrono::steady_clock::now() + drain;
  bool drained = true;
  if (engine_ != nullptr) drained = engine_->Drain(drain);
  // Every engine request has finished (or was cancelled); give the calls until the deadline
  // to write their last messages, and at least a second for the cancelled ones to finish.
  drained = state_.WaitForCalls(
                std::max(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(1))) &&
            drained;
  // Admin work already accepted finishes and answers its call (gRPC's Shutdown would wait for
  // it anyway); later admin calls get UNAVAILABLE.
  admin_workers_.Stop();
  if (grpc_ != nullptr) {
    grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc_->Wait();
  }
  http_.reset();
  metrics_.reset();
  return drained;
}

LoraServer::~LoraServer() { Shutdown(std::chrono::seconds(0)); }

}  // namespace loraserve::server
