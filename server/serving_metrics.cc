#include "server/serving_metrics.h"

#include <set>

#include "absl/strings/str_join.h"

namespace loraserve::server {
namespace {

const std::vector<double> kLatencyBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,  0.5,    1,     2.5,  5,     10,   30, 60};

// Distinct, sorted, comma-joined without spaces (the Gateway API Inference Extension format).
std::string AdapterList(const std::vector<std::string>& ids) {
  std::set<std::string> distinct;
  for (const std::string& id : ids) {
    if (!id.empty()) distinct.insert(id);
  }
  return absl::StrJoin(distinct, ",");
}

}  // namespace

ServingMetrics::ServingMetrics() {
  MetricsRegistry& r = registry_;
  requests_ = r.AddCounter("loraserve_requests_total",
                           "Finished inference requests by adapter and gRPC status code.",
                           {"adapter", "status"});
  prompt_tokens_ = r.AddCounter("loraserve_prompt_tokens_total", "Prompt tokens processed.");
  generation_tokens_ =
      r.AddCounter("loraserve_generation_tokens_total", "Tokens generated, by adapter.",
                   {"adapter"});
  ttft_ = r.AddHistogram("loraserve_time_to_first_token_seconds",
                         "Time from request arrival to its first generated token.", {},
                         kLatencyBounds);
  inter_token_ = r.AddHistogram("loraserve_inter_token_latency_seconds",
                                "Time between consecutive generated tokens of one request.", {},
                                kLatencyBounds);
  queue_time_ = r.AddHistogram("loraserve_request_queue_time_seconds",
                               "Time from request arrival until it was first scheduled.", {},
                               kLatencyBounds);
  e2e_ = r.AddHistogram("loraserve_request_duration_seconds",
                        "Time from request arrival until it finished.", {}, kLatencyBounds);
  waiting_ = r.AddGauge("loraserve_num_requests_waiting", "Requests waiting to be scheduled.");
  running_ = r.AddGauge("loraserve_num_requests_running", "Requests in the running batch.");
  kv_usage_ = r.AddGauge("loraserve_kv_cache_usage_ratio",
                         "KV cache pages in use over pages the KV cache could use (0-1).");
  pool_pages_ = r.AddGauge("loraserve_pool_pages", "Pages of the unified KV and adapter pool.");
  kv_pages_used_ = r.AddGauge("loraserve_kv_cache_pages_used", "Pool pages holding KV blocks.");
  adapter_pages_used_ = r.AddGauge("loraserve_adapter_pool_pages_used",
                                   "Pool pages holding adapter weights.");
  adapters_resident_ = r.AddGauge("loraserve_adapter_pool_resident_adapters",
                                  "Adapters resident in the adapter pool.");
  adapters_registered_ = r.AddGauge("loraserve_adapters_registered",
                                    "Adapters registered with the engine (servable).");
  adapter_loads_ = r.AddCounter("loraserve_adapter_pool_loads_total",
                                "Adapter loads into the adapter pool.");
  adapter_evictions_ = r.AddCounter("loraserve_adapter_pool_evictions_total",
                                    "Adapter evictions from the adapter pool.");
  adapter_hits_ = r.AddCounter("loraserve_adapter_pool_hits_total",
                               "Requests whose adapters were already resident.");
  adapter_misses_ = r.AddCounter("loraserve_adapter_pool_misses_total",
                                 "Requests that waited for an adapter load.");
  adapter_load_seconds_ = r.AddHistogram("loraserve_adapter_pool_load_duration_seconds",
                                         "Time to load one adapter into the adapter pool.", {},
                                         kLatencyBounds);
  uploads_ = r.AddCounter("loraserve_adapter_uploads_total", "Adapter uploads by result.",
                          {"result"});
  preemptions_ = r.AddCounter("loraserve_preemptions_total", "Requests preempted for memory.");
  steps_ = r.AddCounter("loraserve_engine_steps_total", "Engine steps (batched forward passes).");
  merge_mode_ = r.AddGauge("loraserve_merge_mode_info",
                           "Configured merge mode (auto, never, forced); always 1.", {"mode"});
  merged_ = r.AddGauge("loraserve_merged_adapter_info",
                       "Adapter folded into the base weights now (empty = pristine); always 1.",
                       {"adapter"});
  merge_switches_ = r.AddCounter("loraserve_merge_switches_total", "Merges plus unmerges.");
  merge_seconds_ = r.AddCounter("loraserve_merge_mode_seconds_total",
                                "Time spent with the base weights merged or unmerged.", {"state"});
  lora_info_ = r.AddGauge(
      "loraserve_lora_requests_info",
      "Adapters of running and waiting requests (comma-separated, no spaces) and the most "
      "adapters the pool holds; the value is the unix time of the update, like vLLM's "
      "vllm:lora_requests_info.",
      {"running_lora_adapters", "waiting_lora_adapters", "max_lora"});
}

void ServingMetrics::RecordRequest(const std::string& adapter, const std::string& status) {
  requests_->Add({adapter, status}, 1);
}

void ServingMetrics::RecordFinished(const std::string& adapter, const RequestResult& result) {
  prompt_tokens_->Add({}, result.prompt_tokens);
  generation_tokens_->Add({adapter}, static_cast<double>(result.tokens.size()));
  if (!result.tokens.empty()) ttft_->Observe({}, result.first_token_seconds);
  queue_time_->Observe({}, result.queued_seconds);
  e2e_->Observe({}, result.total_seconds);
}

void ServingMetrics::RecordInterToken(double seconds) { inter_token_->Observe({}, seconds); }

void ServingMetrics::RecordAdapterLoads(const std::vector<double>& seconds) {
  for (double s : seconds) adapter_load_seconds_->Observe({}, s);
}

void ServingMetrics::RecordUpload(bool ok) { uploads_->Add({ok ? "ok" : "rejected"}, 1); }

std::string ServingMetrics::Scrape(const Engine* engine, int max_lora, int registered_adapters) {
  if (engine != nullptr) {
    EngineStats stats = engine->Stats();
    waiting_->Set({}, stats.waiting);
    running_->Set({}, stats.running);
    kv_usage_->Set({}, stats.kv_usage);
    pool_pages_->Set({}, static_cast<double>(stats.pool_pages_total));
    kv_pages_used_->Set({}, static_cast<double>(stats.kv_pages_used));
    adapter_pages_used_->Set({}, static_cast<double>(stats.adapter_pages_used));
    adapters_resident_->Set({}, stats.adapters_resident);
    adapters_registered_->Set({}, registered_adapters);
    adapter_loads_->Set({}, static_cast<double>(stats.adapter_loads));
    adapter_evictions_->Set({}, static_cast<double>(stats.adapter_evictions));
    adapter_hits_->Set({}, static_cast<double>(stats.adapter_hits));
    adapter_misses_->Set({}, static_cast<double>(stats.adapter_misses));
    RecordAdapterLoads(stats.adapter_load_seconds);
    preemptions_->Set({}, static_cast<double>(stats.preemptions));
    steps_->Set({}, static_cast<double>(stats.steps));
    merge_mode_->Clear();
    merge_mode_->Set({MergeModeName(stats.merge_mode)}, 1);
    merged_->Clear();
    merged_->Set({stats.merged_adapter}, 1);
    merge_switches_->Set({}, static_cast<double>(stats.merge_switches));
    merge_seconds_->Set({"merged"}, stats.seconds_merged);
    merge_seconds_->Set({"unmerged"}, stats.seconds_unmerged);
    const double now = std::chrono::duration<double>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    lora_info_->Clear();
    lora_info_->Set({AdapterList(stats.running_adapters), AdapterList(stats.waiting_adapters),
                     std::to_string(max_lora)},
                    now);
  }
  return registry_.Render();
}

}  // namespace loraserve::server
