// The table behind EngineStatFields: the only place a statistic is named.
#include "runtime/engine_stats.h"

#include <algorithm>
#include <array>

namespace loraserve {

const char* MergeModeName(MergeMode mode) {
  switch (mode) {
    case MergeMode::kAuto: return "auto";
    case MergeMode::kNever: return "never";
    case MergeMode::kForced: return "forced";
  }
  return "?";
}

CumulativeHistogram::CumulativeHistogram(std::vector<double> upper_bounds)
    : bounds(std::move(upper_bounds)), counts(bounds.size() + 1, 0) {}

void CumulativeHistogram::Observe(double value) {
  const size_t bucket =
      std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin();  // le semantics
  ++counts[bucket];
  sum += value;
  ++count;
}

std::vector<double> LatencyBounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

namespace {

constexpr StatKind kGauge = StatKind::kGauge;
constexpr StatKind kCounter = StatKind::kCounter;

const std::array<EngineStatField, 28> kFields = {{
    {"waiting", "loraserve_num_requests_waiting", "Requests waiting to be scheduled.", kGauge,
     [](const EngineStats& s) { return double(s.waiting); }},
    {"running", "loraserve_num_requests_running", "Requests in the running batch.", kGauge,
     [](const EngineStats& s) { return double(s.running); }},
    {"pool_pages_total", "loraserve_pool_pages", "Pages of the unified KV and adapter pool.",
     kGauge, [](const EngineStats& s) { return double(s.pool_pages_total); }},
    {"kv_pages_used", "loraserve_kv_cache_pages_used", "Pool pages holding KV blocks.", kGauge,
     [](const EngineStats& s) { return double(s.kv_pages_used); }},
    {"adapter_pages_used", "loraserve_adapter_pool_pages_used",
     "Pool pages holding adapter weights.", kGauge,
     [](const EngineStats& s) { return double(s.adapter_pages_used); }},
    {"kv_usage", "loraserve_kv_cache_usage_ratio",
     "KV cache pages in use over pages the KV cache could use (0-1).", kGauge,
     [](const EngineStats& s) { return s.kv_usage; }},
    {"adapters_resident", "loraserve_adapter_pool_resident_adapters",
     "Adapters resident in the adapter pool.", kGauge,
     [](const EngineStats& s) { return double(s.adapters_resident); }},
    {"adapter_loads", "loraserve_adapter_pool_loads_total", "Adapter loads into the adapter pool.",
     kCounter, [](const EngineStats& s) { return double(s.adapter_loads); }},
    {"adapter_evictions", "loraserve_adapter_pool_evictions_total",
     "Adapter evictions from the adapter pool.", kCounter,
     [](const EngineStats& s) { return double(s.adapter_evictions); }},
    {"adapter_hits", "loraserve_adapter_pool_hits_total",
     "Requests whose adapters were already resident.", kCounter,
     [](const EngineStats& s) { return double(s.adapter_hits); }},
    {"adapter_misses", "loraserve_adapter_pool_misses_total",
     "Requests that waited for an adapter load.", kCounter,
     [](const EngineStats& s) { return double(s.adapter_misses); }},
    {"preemptions", "loraserve_preemptions_total", "Requests preempted for memory.", kCounter,
     [](const EngineStats& s) { return double(s.preemptions); }},
    // Generated tokens are exported per adapter by the transports (loraserve_generation_tokens).
    {"generated_tokens", "", "Tokens generated since start.", kCounter,
     [](const EngineStats& s) { return double(s.generated_tokens); }},
    {"steps", "loraserve_engine_steps_total", "Engine steps (batched forward passes).", kCounter,
     [](const EngineStats& s) { return double(s.steps); }},
    {"merge_switches", "loraserve_merge_switches_total", "Merges plus unmerges.", kCounter,
     [](const EngineStats& s) { return double(s.merge_switches); }},
    {"seconds_merged", "loraserve_merge_mode_seconds_total",
     "Time spent with the base weights merged or unmerged.", kCounter,
     [](const EngineStats& s) { return s.seconds_merged; }, "state", "merged"},
    {"seconds_unmerged", "loraserve_merge_mode_seconds_total",
     "Time spent with the base weights merged or unmerged.", kCounter,
     [](const EngineStats& s) { return s.seconds_unmerged; }, "state", "unmerged"},
    {"adapters_host", "loraserve_adapter_host_adapters",
     "Adapters parsed in host memory (the host tier).", kGauge,
     [](const EngineStats& s) { return double(s.adapters_host); }},
    {"host_bytes_used", "loraserve_adapter_host_bytes",
     "Bytes of adapter weights in host memory.", kGauge,
     [](const EngineStats& s) { return double(s.host_bytes_used); }},
    {"host_budget_bytes", "loraserve_adapter_host_budget_bytes",
     "Byte budget of the host tier (--host-cache-bytes; 0 = unlimited).", kGauge,
     [](const EngineStats& s) { return double(s.host_budget_bytes); }},
    {"host_hits", "loraserve_adapter_host_hits_total",
     "Adapter lookups served from host memory.", kCounter,
     [](const EngineStats& s) { return double(s.host_hits); }},
    {"host_misses", "loraserve_adapter_host_misses_total",
     "Adapter lookups that had to read the adapter from the store.", kCounter,
     [](const EngineStats& s) { return double(s.host_misses); }},
    {"host_loads", "loraserve_adapter_host_loads_total",
     "Adapters read from the store into host memory.", kCounter,
     [](const EngineStats& s) { return double(s.host_loads); }},
    {"host_load_failures", "loraserve_adapter_host_load_failures_total",
     "Store reads that failed (the requests needing them failed).", kCounter,
     [](const EngineStats& s) { return double(s.host_load_failures); }},
    {"host_evictions", "loraserve_adapter_host_evictions_total",
     "Adapters dropped from host memory for the budget.", kCounter,
     [](const EngineStats& s) { return double(s.host_evictions); }},
    {"requests_waiting_for_adapter", "loraserve_num_requests_waiting_for_adapter",
     "Requests queued until their adapters are read from the store.", kGauge,
     [](const EngineStats& s) { return double(s.requests_waiting_for_adapter); }},
    {"adapter_pool_bytes_used", "loraserve_adapter_pool_bytes_used",
     "Bytes of pool pages holding adapter weights.", kGauge,
     [](const EngineStats& s) { return double(s.adapter_pool_bytes_used); }},
    {"pool_bytes_total", "loraserve_pool_bytes",
     "Bytes of the unified KV and adapter pool.", kGauge,
     [](const EngineStats& s) { return double(s.pool_bytes_total); }},
}};

}  // namespace

std::span<const EngineStatField> EngineStatFields() { return kFields; }

}  // namespace loraserve
