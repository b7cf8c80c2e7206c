// The loraserve_* metrics: per-request series recorded by the services as requests finish, and
// engine gauges refreshed from Engine::Stats() at each scrape. docs/metrics.md documents each.
#pragma once

#include <chrono>
#include <string>

#include "runtime/engine.h"
#include "server/metrics_registry.h"

namespace loraserve::server {

class ServingMetrics {
 public:
  ServingMetrics();

  // `adapter`: the request's adapter label ("" = base model; several joined with '+').
  // `status`: a gRPC status code name ("OK", "NOT_FOUND", ...).
  void RecordRequest(const std::string& adapter, const std::string& status);
  void RecordFinished(const std::string& adapter, const RequestResult& result);
  void RecordInterToken(double seconds);
  void RecordUpload(bool ok);
  // Engine::Stats() hands each adapter-load time out once; whoever calls it passes them here.
  void RecordAdapterLoads(const std::vector<double>& seconds);

  // Pulls engine state into the gauges and renders the exposition. `max_lora` is the number of
  // adapters the pool holds at most.
  std::string Scrape(const Engine* engine, int max_lora, int registered_adapters);
  MetricsRegistry& registry() { return registry_; }

 private:
  MetricsRegistry registry_;
  ScalarFamily* requests_;
  ScalarFamily* prompt_tokens_;
  ScalarFamily* generation_tokens_;
  HistogramFamily* ttft_;
  HistogramFamily* inter_token_;
  HistogramFamily* queue_time_;
  HistogramFamily* e2e_;
  ScalarFamily* waiting_;
  ScalarFamily* running_;
  ScalarFamily* kv_usage_;
  ScalarFamily* pool_pages_;
  ScalarFamily* kv_pages_used_;
  ScalarFamily* adapter_pages_used_;
  ScalarFamily* adapters_resident_;
  ScalarFamily* adapters_registered_;
  ScalarFamily* adapter_loads_;
  ScalarFamily* adapter_evictions_;
  ScalarFamily* adapter_hits_;
  ScalarFamily* adapter_misses_;
  HistogramFamily* adapter_load_seconds_;
  ScalarFamily* uploads_;
  ScalarFamily* preemptions_;
  ScalarFamily* steps_;
  ScalarFamily* merge_mode_;
  ScalarFamily* merged_;
  ScalarFamily* merge_switches_;
  ScalarFamily* merge_seconds_;
  ScalarFamily* lora_info_;
};

}  // namespace loraserve::server
