// The exported metric set is a contract (dashboards, the Gateway API endpoint picker): every
// family keeps its name, type, help text and labels, and readers never drain each other.
#include "server/serving_metrics.h"

#include <set>

#include "absl/strings/str_cat.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loraserve::server {
namespace {

using ::testing::HasSubstr;

struct Family {
  std::string name, type, help;
  std::vector<std::string> labels;
};

// The metric set as documented in docs/metrics.md (and as it was before the stats table).
const std::vector<Family>& ExpectedFamilies() {
  static const std::vector<Family> families = {
      {"loraserve_requests_total",
       "counter",
       "Finished inference requests by adapter and gRPC status code.",
       {"adapter", "status"}},
      {"loraserve_prompt_tokens_total", "counter", "Prompt tokens processed.", {}},
      {"loraserve_generation_tokens_total",
       "counter",
       "Tokens generated, by adapter.",
       {"adapter"}},
      {"loraserve_time_to_first_token_seconds",
       "histogram",
       "Time from request arrival to its first generated token.",
       {}},
      {"loraserve_inter_token_latency_seconds",
       "histogram",
       "Time between consecutive generated tokens of one request.",
       {}},
      {"loraserve_request_queue_time_seconds",
       "histogram",
       "Time from request arrival until it was first scheduled.",
       {}},
      {"loraserve_request_duration_seconds",
       "histogram",
       "Time from request arrival until it finished.",
       {}},
      {"loraserve_num_requests_waiting", "gauge", "Requests waiting to be scheduled.", {}},
      {"loraserve_num_requests_running", "gauge", "Requests in the running batch.", {}},
      {"loraserve_kv_cache_usage_ratio",
       "gauge",
       "KV cache pages in use over pages the KV cache could use (0-1).",
       {}},
      {"loraserve_pool_pages", "gauge", "Pages of the unified KV and adapter pool.", {}},
      {"loraserve_kv_cache_pages_used", "gauge", "Pool pages holding KV blocks.", {}},
      {"loraserve_adapter_pool_pages_used", "gauge", "Pool pages holding adapter weights.", {}},
      {"loraserve_adapter_pool_resident_adapters",
       "gauge",
       "Adapters resident in the adapter pool.",
       {}},
      {"loraserve_adapters_registered",
       "gauge",
       "Adapters registered with the engine (servable).",
       {}},
      {"loraserve_adapter_pool_loads_total", "counter", "Adapter loads into the adapter pool.", {}},
      {"loraserve_adapter_pool_evictions_total",
       "counter",
       "Adapter evictions from the adapter pool.",
       {}},
      {"loraserve_adapter_pool_hits_total",
       "counter",
       "Requests whose adapters were already resident.",
       {}},
      {"loraserve_adapter_pool_misses_total",
       "counter",
       "Requests that waited for an adapter load.",
       {}},
      {"loraserve_adapter_pool_load_duration_seconds",
       "histogram",
       "Time to load one adapter into the adapter pool.",
       {}},
      {"loraserve_adapter_host_load_duration_seconds",
       "histogram",
       "Time to read, verify and parse one adapter from the store into host memory.",
       {}},
      {"loraserve_adapter_host_adapters", "gauge",
       "Adapters parsed in host memory (the host tier).", {}},
      {"loraserve_adapter_host_bytes", "gauge", "Bytes of adapter weights in host memory.", {}},
      {"loraserve_adapter_host_budget_bytes", "gauge",
       "Byte budget of the host tier (--host-cache-bytes; 0 = unlimited).", {}},
      {"loraserve_adapter_host_hits_total", "counter",
       "Adapter lookups served from host memory.", {}},
      {"loraserve_adapter_host_misses_total", "counter",
       "Adapter lookups that had to read the adapter from the store.", {}},
      {"loraserve_adapter_host_loads_total", "counter",
       "Adapters read from the store into host memory.", {}},
      {"loraserve_adapter_host_load_failures_total", "counter",
       "Store reads that failed (the requests needing them failed).", {}},
      {"loraserve_adapter_host_evictions_total", "counter",
       "Adapters dropped from host memory for the budget.", {}},
      {"loraserve_num_requests_waiting_for_adapter", "gauge",
       "Requests queued until their adapters are read from the store.", {}},
      {"loraserve_adapter_pool_bytes_used", "gauge",
       "Bytes of pool pages holding adapter weights.", {}},
      {"loraserve_pool_bytes", "gauge", "Bytes of the unified KV and adapter pool.", {}},
      {"loraserve_adapter_uploads_total", "counter", "Adapter uploads by result.", {"result"}},
      {"loraserve_preemptions_total", "counter", "Requests preempted for memory.", {}},
      {"loraserve_engine_steps_total", "counter", "Engine steps (batched forward passes).", {}},
      {"loraserve_merge_mode_info",
       "gauge",
       "Configured merge mode (auto, never, forced); always 1.",
       {"mode"}},
      {"loraserve_merged_adapter_info",
       "gauge",
       "Adapter folded into the base weights now (empty = pristine); always 1.",
       {"adapter"}},
      {"loraserve_merge_switches_total", "counter", "Merges plus unmerges.", {}},
      {"loraserve_merge_mode_seconds_total",
       "counter",
       "Time spent with the base weights merged or unmerged.",
       {"state"}},
      {"loraserve_lora_requests_info",
       "gauge",
       "Adapters resident in the adapter pool, idle ones included (running_lora_adapters), "
       "adapters queued requests need that are not resident (waiting_lora_adapters), and the "
       "most adapters the pool holds; comma-separated, no spaces. The value is the unix time of "
       "the update, as the model-server protocol of the Gateway API Inference Extension asks.",
       {"max_lora", "running_lora_adapters", "waiting_lora_adapters"}},
      {"vllm:num_requests_waiting",
       "gauge",
       "Requests waiting to be scheduled (vLLM's name).",
       {"engine", "model_name"}},
      {"vllm:num_requests_running",
       "gauge",
       "Requests in the running batch (vLLM's name).",
       {"engine", "model_name"}},
      {"vllm:kv_cache_usage_perc",
       "gauge",
       "Fraction (0-1) of the pool held by KV blocks (vLLM's name).",
       {"engine", "model_name"}},
      {"vllm:gpu_cache_usage_perc",
       "gauge",
       "Alias of vllm:kv_cache_usage_perc for endpoint pickers before GAIE v1.3.",
       {"engine", "model_name"}},
      {"vllm:lora_requests_info",
       "gauge",
       "The same series as loraserve_lora_requests_info (vLLM's name).",
       {"max_lora", "running_lora_adapters", "waiting_lora_adapters"}},
      {"vllm:cache_config_info",
       "gauge",
       "KV cache layout: tokens per block and blocks in the pool; always 1.",
       {"block_size", "num_gpu_blocks"}},
  };
  return families;
}

EngineStats SomeStats() {
  EngineStats stats;
  stats.waiting = 3;
  stats.running = 5;
  stats.pool_pages_total = 1000;
  stats.kv_pages_used = 40;
  stats.adapter_pages_used = 60;
  stats.kv_usage = 0.25;
  stats.adapters_resident = 2;
  stats.adapter_loads = 7;
  stats.adapter_evictions = 1;
  stats.adapter_hits = 11;
  stats.adapter_misses = 4;
  stats.preemptions = 2;
  stats.generated_tokens = 999;
  stats.steps = 123;
  stats.merge_switches = 6;
  stats.seconds_merged = 1.5;
  stats.seconds_unmerged = 2.5;
  stats.merge_mode = MergeMode::kForced;
  stats.merged_adapter = "m";
  stats.running_adapters = {"b", "a", "b"};
  stats.waiting_adapters = {"c"};
  stats.resident_adapters = {"b", "a", "idle"};
  stats.pending_adapters = {"c"};
  stats.kv_block_size = 16;
  return stats;
}

TEST(ServingMetricsTest, EveryFamilyKeepsItsNameTypeHelpAndLabels) {
  ServingMetrics metrics;
  metrics.EnableVllmNames("base");
  metrics.RecordRequest("a", "OK");
  RequestResult finished;
  finished.tokens = {5, 6};
  metrics.RecordFinished("a", finished);
  metrics.RecordUpload(true);
  metrics.Refresh(SomeStats(), 16, 9);
  const std::string text = metrics.registry().Render();
  std::set<std::string> typed;
  for (size_t at = text.find("# TYPE "); at != std::string::npos;
       at = text.find("# TYPE ", at + 1)) {
    typed.insert(text.substr(at + 7, text.find(' ', at + 7) - at - 7));
  }
  for (const Family& f : ExpectedFamilies()) {
    EXPECT_THAT(text, HasSubstr("# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " +
                                f.type + "\n"))
        << f.name;
    if (!f.labels.empty()) {
      EXPECT_THAT(text, HasSubstr("\n" + f.name + "{" + f.labels[0] + "=\"")) << f.name;
      EXPECT_THAT(text, HasSubstr(f.labels.back() + "=\"")) << f.name;
    }
    typed.erase(f.name);
  }
  EXPECT_TRUE(typed.empty()) << "unexpected family " << *typed.begin();
}

TEST(ServingMetricsTest, EngineFieldsComeFromTheStatsTable) {
  ServingMetrics metrics;
  metrics.Refresh(SomeStats(), 16, 9);
  const std::string text = metrics.registry().Render();
  EXPECT_THAT(text, HasSubstr("\nloraserve_num_requests_waiting 3\n"));
  EXPECT_THAT(text, HasSubstr("\nloraserve_kv_cache_usage_ratio 0.25\n"));
  EXPECT_THAT(text, HasSubstr("\nloraserve_adapter_pool_loads_total 7\n"));
  EXPECT_THAT(text, HasSubstr("\nloraserve_engine_steps_total 123\n"));
  EXPECT_THAT(text, HasSubstr("\nloraserve_merge_mode_seconds_total{state=\"merged\"} 1.5\n"));
  EXPECT_THAT(text, HasSubstr("\nloraserve_merge_mode_seconds_total{state=\"unmerged\"} 2.5\n"));
  EXPECT_THAT(text, HasSubstr("\nloraserve_adapters_registered 9\n"));
  EXPECT_THAT(text, HasSubstr("\nloraserve_merge_mode_info{mode=\"forced\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("\nloraserve_merged_adapter_info{adapter=\"m\"} 1\n"));
  // Residency, idle adapters included (the protocol's meaning), not request activity.
  const std::string lora_labels =
      "{max_lora=\"16\",running_lora_adapters=\"a,b,idle\",waiting_lora_adapters=\"c\"} ";
  EXPECT_THAT(text, HasSubstr("loraserve_lora_requests_info" + lora_labels));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("vllm:")));  // opt-in
  metrics.EnableVllmNames("smol");
  metrics.Refresh(SomeStats(), 16, 9);
  const std::string named = metrics.registry().Render();
  EXPECT_THAT(named, HasSubstr("\nvllm:num_requests_waiting{engine=\"0\",model_name=\"smol\"} 3\n"));
  EXPECT_THAT(named, HasSubstr("\nvllm:num_requests_running{engine=\"0\",model_name=\"smol\"} 5\n"));
  EXPECT_THAT(named, HasSubstr("\nvllm:kv_cache_usage_perc{engine=\"0\",model_name=\"smol\"} 0.25\n"));
  EXPECT_THAT(named, HasSubstr("\nvllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"smol\"} 0.25\n"));
  EXPECT_THAT(named, HasSubstr("vllm:lora_requests_info" + lora_labels));
  EXPECT_THAT(named, HasSubstr("\nvllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"1000\"} 1\n"));
  // generated_tokens has no metric of its own (loraserve_generation_tokens_total is per adapter).
  EXPECT_THAT(text, ::testing::Not(HasSubstr(" 999\n")));
}

TEST(ServingMetricsTest, LoadHistogramIsTheEngineSnapshotForEveryReader) {
  ServingMetrics metrics;
  EngineStats stats = SomeStats();
  stats.adapter_load_seconds.Observe(0.02);
  stats.adapter_load_seconds.Observe(0.3);
  for (int reader = 0; reader < 2; ++reader) {
    metrics.Refresh(stats, 16, 9);
    const std::string text = metrics.registry().Render();
    EXPECT_THAT(text, HasSubstr("\nloraserve_adapter_pool_load_duration_seconds_count 2\n"))
        << "reader " << reader;
    EXPECT_THAT(text, HasSubstr("loraserve_adapter_pool_load_duration_seconds_bucket{le="
                                "\"0.025000000000000001\"} 1\n"))
        << "reader " << reader;
  }
  stats.adapter_load_seconds.Observe(0.001);
  metrics.Refresh(stats, 16, 9);
  EXPECT_THAT(metrics.registry().Render(),
              HasSubstr("\nloraserve_adapter_pool_load_duration_seconds_count 3\n"));
}

}  // namespace
}  // namespace loraserve::server
