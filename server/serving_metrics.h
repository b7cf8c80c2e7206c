// The loraserve_* metrics: per-request series recorded by the generation call as requests
// finish, and engine families refreshed from Engine::Stats() at each scrape (one family per
// metric of EngineStatFields()). docs/metrics.md documents each.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "runtime/engine.h"
#include "server/metrics_registry.h"

namespace loraserve::server {

class ServingMetrics {
 public:
  ServingMetrics();

  // `adapter`: the request's adapter label ("" = base model; several joined with '+').
  // `status`: a status code name ("OK", "NOT_FOUND", ...; gRPC and absl spell them alike).
  void RecordRequest(const std::string& adapter, const std::string& status);
  void RecordFinished(const std::string& adapter, const RequestResult& result);
  void RecordInterToken(double seconds);
  void RecordUpload(bool ok);

  // Sets the engine families from `stats`. `max_lora` is the most adapters the pool holds.
  void Refresh(const EngineStats& stats, int max_lora, int registered_adapters);
  // Refresh from engine->Stats() (when there is an engine yet), then the whole exposition.
  std::string Scrape(const Engine* engine, int max_lora, int registered_adapters);
  MetricsRegistry& registry() { return registry_; }
  // Also export the router-facing gauges under vLLM's names (vllm:num_requests_waiting, ...), so
  // a stock endpoint picker routes on us without an engine config. `model_name` labels them
  // (the served model name). Call once, before the first scrape.
  void EnableVllmNames(std::string model_name);

 private:
  MetricsRegistry registry_;
  ScalarFamily* requests_;
  ScalarFamily* prompt_tokens_;
  ScalarFamily* generation_tokens_;
  HistogramFamily* ttft_;
  HistogramFamily* inter_token_;
  HistogramFamily* queue_time_;
  HistogramFamily* e2e_;
  // EngineStatField::metric -> its family (the names are static strings of the table).
  std::map<std::string_view, ScalarFamily*> engine_families_;
  ScalarFamily* adapters_registered_;
  HistogramFamily* adapter_load_seconds_;
  HistogramFamily* host_load_seconds_;
  ScalarFamily* uploads_;
  ScalarFamily* merge_mode_;
  ScalarFamily* merged_;
  ScalarFamily* lora_info_;
  // vLLM's names, so a stock endpoint picker (GAIE's default engine config) routes on us.
  // Null unless EnableVllmNames: promtool's lint rejects ':' in names, so they are opt-out.
  ScalarFamily* vllm_waiting_ = nullptr;
  ScalarFamily* vllm_running_ = nullptr;
  ScalarFamily* vllm_kv_usage_ = nullptr;
  ScalarFamily* vllm_gpu_cache_usage_ = nullptr;  // the pre-rename alias, for pickers <= GAIE v1.2
  ScalarFamily* vllm_lora_info_ = nullptr;
  ScalarFamily* vllm_cache_config_ = nullptr;
  std::string model_name_ = "base";
  // Scrapes come from two listeners (the metrics port and the HTTP port); one at a time, so no
  // reader renders a family between its Clear and Set.
  std::mutex scrape_mutex_;
};

}  // namespace loraserve::server
