// The metric set: request series by hand, engine scalars from the EngineStatFields() table, and
// the adapter-load histogram copied from the engine's cumulative snapshot at each scrape.
#include "server/serving_metrics.h"

#include <set>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loraserve::server {
namespace {

// Distinct, sorted, comma-joined without spaces (the Gateway API Inference Extension format).
std::string AdapterList(const std::vector<std::string>& ids) {
  std::set<std::string> distinct;
  for (const std::string& id : ids) {
    if (!id.empty()) distinct.insert(id);
  }
  return absl::StrJoin(distinct, ",");
}

LabelValues FieldLabels(const EngineStatField& field) {
  if (field.label_name.empty()) return {};
  return {std::string(field.label_value)};
}

}  // namespace

ServingMetrics::ServingMetrics() {
  MetricsRegistry& r = registry_;
  const std::vector<double> latency = LatencyBounds();
  requests_ = r.AddCounter("loraserve_requests_total",
                           "Finished inference requests by adapter and gRPC status code.",
                           {"adapter", "status"});
  prompt_tokens_ = r.AddCounter("loraserve_prompt_tokens_total", "Prompt tokens processed.");
  generation_tokens_ = r.AddCounter("loraserve_generation_tokens_total",
                                    "Tokens generated, by adapter.", {"adapter"});
  ttft_ = r.AddHistogram("loraserve_time_to_first_token_seconds",
                         "Time from request arrival to its first generated token.", {}, latency);
  inter_token_ =
      r.AddHistogram("loraserve_inter_token_latency_seconds",
                     "Time between consecutive generated tokens of one request.", {}, latency);
  queue_time_ =
      r.AddHistogram("loraserve_request_queue_time_seconds",
                     "Time from request arrival until it was first scheduled.", {}, latency);
  e2e_ = r.AddHistogram("loraserve_request_duration_seconds",
                        "Time from request arrival until it finished.", {}, latency);

  // Fields sharing a family must agree on everything but the label value: a programming error
  // in runtime/engine_stats.cc otherwise, caught by the first test that builds this object.
  std::map<std::string_view, const EngineStatField*> first;
  for (const EngineStatField& field : EngineStatFields()) {
    if (field.metric.empty()) continue;
    auto [it, added] = first.emplace(field.metric, &field);
    if (!added) {
      const EngineStatField& a = *it->second;
      if (a.kind != field.kind || a.help != field.help || a.label_name != field.label_name ||
          field.label_name.empty()) {
        // absl::string_view is not std::string_view in this abseil build.
        throw std::logic_error(absl::StrCat("EngineStatFields: ", std::string(field.proto_field),
                                            " and ", std::string(a.proto_field), " share metric ",
                                            std::string(field.metric),
                                            " but differ in kind, help or label"));
      }
      continue;
    }
    std::vector<std::string> labels;
    if (!field.label_name.empty()) labels.emplace_back(field.label_name);
    const std::string name(field.metric), help(field.help);
    engine_families_[field.metric] = field.kind == StatKind::kCounter
                                         ? r.AddCounter(name, help, std::move(labels))
                                         : r.AddGauge(name, help, std::move(labels));
  }

  adapters_registered_ = r.AddGauge("loraserve_adapters_registered",
                                    "Adapters registered with the engine (servable).");
  adapter_load_seconds_ =
      r.AddHistogram("loraserve_adapter_pool_load_duration_seconds",
                     "Time to load one adapter into the adapter pool.", {}, latency);
  host_load_seconds_ =
      r.AddHistogram("loraserve_adapter_host_load_duration_seconds",
                     "Time to read, verify and parse one adapter from the store into host "
                     "memory.", {}, latency);
  uploads_ =
      r.AddCounter("loraserve_adapter_uploads_total", "Adapter uploads by result.", {"result"});
  merge_mode_ = r.AddGauge("loraserve_merge_mode_info",
                           "Configured merge mode (auto, never, forced); always 1.", {"mode"});
  merged_ = r.AddGauge("loraserve_merged_adapter_info",
                       "Adapter folded into the base weights now (empty = pristine); always 1.",
                       {"adapter"});
  lora_info_ = r.AddGauge(
      "loraserve_lora_requests_info",
      "Adapters resident in the adapter pool, idle ones included (running_lora_adapters), "
      "adapters queued requests need that are not resident (waiting_lora_adapters), and the "
      "most adapters the pool holds; comma-separated, no spaces. The value is the unix time of "
      "the update, as the model-server protocol of the Gateway API Inference Extension asks.",
      {"max_lora", "running_lora_adapters", "waiting_lora_adapters"});

}

void ServingMetrics::EnableVllmNames(std::string model_name) {
  if (vllm_waiting_ != nullptr) return;
  model_name_ = std::move(model_name);
  const std::vector<std::string> vllm_labels = {"engine", "model_name"};
  vllm_waiting_ = registry_.AddGauge("vllm:num_requests_waiting",
                             "Requests waiting to be scheduled (vLLM's name).", vllm_labels);
  vllm_running_ = registry_.AddGauge("vllm:num_requests_running",
                             "Requests in the running batch (vLLM's name).", vllm_labels);
  vllm_kv_usage_ = registry_.AddGauge("vllm:kv_cache_usage_perc",
                              "Fraction (0-1) of the pool held by KV blocks (vLLM's name).",
                              vllm_labels);
  vllm_gpu_cache_usage_ = registry_.AddGauge(
      "vllm:gpu_cache_usage_perc",
      "Alias of vllm:kv_cache_usage_perc for endpoint pickers before GAIE v1.3.", vllm_labels);
  vllm_lora_info_ = registry_.AddGauge("vllm:lora_requests_info",
                               "The same series as loraserve_lora_requests_info (vLLM's name).",
                               {"max_lora", "running_lora_adapters", "waiting_lora_adapters"});
  vllm_cache_config_ = registry_.AddGauge(
      "vllm:cache_config_info",
      "KV cache layout: tokens per block and blocks in the pool; always 1.",
      {"block_size", "num_gpu_blocks"});
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

void ServingMetrics::RecordUpload(bool ok) { uploads_->Add({ok ? "ok" : "rejected"}, 1); }

void ServingMetrics::Refresh(const EngineStats& stats, int max_lora, int registered_adapters) {
  for (const EngineStatField& field : EngineStatFields()) {
    if (field.metric.empty()) continue;
    engine_families_.at(field.metric)->Set(FieldLabels(field), field.value(stats));
  }
  adapters_registered_->Set({}, registered_adapters);
  const CumulativeHistogram& loads = stats.adapter_load_seconds;
  adapter_load_seconds_->SetCumulative({}, loads.counts, loads.sum, loads.count);
  const CumulativeHistogram& host_loads = stats.host_load_seconds;
  host_load_seconds_->SetCumulative({}, host_loads.counts, host_loads.sum, host_loads.count);
  merge_mode_->Clear();
  merge_mode_->Set({MergeModeName(stats.merge_mode)}, 1);
  merged_->Clear();
  merged_->Set({stats.merged_adapter}, 1);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  // One current series (the picker takes the largest value; old label sets are dropped).
  const LabelValues lora = {std::to_string(max_lora), AdapterList(stats.resident_adapters),
                            AdapterList(stats.pending_adapters)};
  lora_info_->Clear();
  lora_info_->Set(lora, now);
  if (vllm_waiting_ == nullptr) return;
  vllm_lora_info_->Clear();
  vllm_lora_info_->Set(lora, now);
  const LabelValues engine = {"0", model_name_};
  vllm_waiting_->Set(engine, stats.waiting);
  vllm_running_->Set(engine, stats.running);
  vllm_kv_usage_->Set(engine, stats.kv_usage);
  vllm_gpu_cache_usage_->Set(engine, stats.kv_usage);
  vllm_cache_config_->Clear();
  vllm_cache_config_->Set({std::to_string(stats.kv_block_size),
                           std::to_string(stats.pool_pages_total)},
                          1);
}

std::string ServingMetrics::Scrape(const Engine* engine, int max_lora, int registered_adapters) {
  std::lock_guard lock(scrape_mutex_);
  if (engine != nullptr) Refresh(engine->Stats(), max_lora, registered_adapters);
  return registry_.Render();
}

}  // namespace loraserve::server
