// The whole serving process minus flag parsing: binds the gRPC and HTTP ports (health
// NOT_SERVING, HTTP /health 503), loads
// the model, opens the adapter store, starts the engine, registers stored and --adapter-dir
// adapters, then reports SERVING. Shutdown drains in-flight requests within a deadline. The
// server owns the admin worker pool.
#pragma once

#include <grpcpp/server.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "adapters/adapter_store.h"
#include "runtime/engine.h"
#include "server/adapter_manager.h"
#include "server/admin_service.h"
#include "server/bearer_auth.h"
#include "runtime/backend/device.h"
#include "server/http/http_options.h"
#include "server/http/openai_server.h"
#include "server/inference_service.h"
#include "server/metrics_http.h"
#include "server/serving_state.h"
#include "server/worker_pool.h"

namespace loraserve::server {

struct ServerOptions {
  std::string model_dir;
  BackendChoice backend;  // --device, and the weight dtype and SIMD kernels of the CPU backend
  std::string listen = "127.0.0.1:50051";         // port 0 = pick one (see LoraServer::port)
  std::string metrics_listen = "127.0.0.1:9400";  // empty = no /metrics
  std::string store_dir;        // empty = no store: uploads and LoadAdapter are unavailable
  std::string adapter_dir;      // every subfolder registered at start (not stored)
  // Re-hash every stored file at start. Off: sizes are checked at start and each adapter's
  // sha256 when it is first read into host memory, so a start reads no tensors.
  bool verify_store_on_start = false;
  std::string admin_token;      // empty = the admin API answers PERMISSION_DENIED
  std::string inference_token;  // empty = inference needs no token
  std::string tls_cert, tls_key, tls_client_ca;  // PEM files; cert+key enable TLS
  int max_message_bytes = 64 << 20;
  // Largest request metadata (all headers of one call, HPACK-decoded); larger calls are refused
  // by gRPC with RESOURCE_EXHAUSTED before any handler runs.
  int max_metadata_bytes = 16 << 10;
  int default_max_tokens = 16;
  // Threads for slow admin work (uploads, loads, unloads, fusion); at least 1.
  int admin_threads = 2;
  EngineOptions engine;
  AdapterManagerOptions adapters;
  http::HttpOptions http;  // the OpenAI API; http.listen empty = none
  // Export the router gauges under vLLM's names too, for endpoint pickers with no loraserve
  // engine config (GAIE before v1.5, or Pods labelled engine-type: vllm). Off by default:
  // promtool's lint rejects ':' in names.
  bool vllm_metric_names = false;
  // Receives log lines (start-up events, skipped adapters); defaults to spdlog.
  std::function<void(const std::string&)> log;
};

class LoraServer {
 public:
  static absl::StatusOr<std::unique_ptr<LoraServer>> Start(ServerOptions options);
  ~LoraServer();  // Shutdown(0) unless already shut down

  int port() const { return port_; }
  int metrics_port() const { return metrics_ ? metrics_->port() : 0; }
  int http_port() const { return http_ ? http_->port() : 0; }
  Engine* engine() { return engine_.get(); }
  ServingState& state() { return state_; }

  // Health NOT_SERVING, new requests UNAVAILABLE, in-flight ones get up to `drain` to finish
  // (the rest are cancelled), then the listeners close. True when everything finished in time.
  // Idempotent.
  bool Shutdown(std::chrono::steady_clock::duration drain);

 private:
  explicit LoraServer(ServerOptions options);
  absl::Status StartGrpc();
  std::string ScrapeMetrics();
  absl::Status LoadModel();
  void SetHealth(bool serving);

  ServerOptions options_;
  ServingState state_;
  // Started before gRPC, stopped (queued work finished, threads joined) in Shutdown.
  WorkerPool admin_workers_;
  BearerAuth admin_auth_;
  BearerAuth inference_auth_;
  InferenceService inference_service_;
  AdminService admin_service_;

  std::unique_ptr<AdapterStore> store_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<AdapterManager> adapters_;
  std::unique_ptr<Engine> engine_;
  ServingCore core_;
  std::unique_ptr<grpc::Server> grpc_;
  std::unique_ptr<MetricsHttpServer> metrics_;
  std::unique_ptr<http::OpenAiHttpServer> http_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace loraserve::server
