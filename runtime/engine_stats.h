// Engine statistics: one struct, and one table that names every scalar field once (admin proto
// field, Prometheus metric, help text, counter or gauge), so the transports map it in a loop
// instead of copying fields by hand. Histograms are cumulative: any number of readers may
// call Engine::Stats() without stealing samples from each other.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loraserve {

enum class MergeMode { kAuto, kNever, kForced };
const char* MergeModeName(MergeMode mode);

// Fixed-bound histogram that only grows; a snapshot is a plain copy.
struct CumulativeHistogram {
  std::vector<double> bounds;    // ascending finite upper bounds; +Inf implied
  std::vector<uint64_t> counts;  // per bucket, not cumulative; counts.size() == bounds.size() + 1
  double sum = 0;
  uint64_t count = 0;

  explicit CumulativeHistogram(std::vector<double> upper_bounds = {});
  void Observe(double value);
};

// Seconds, from 1 ms to 60 s: adapter loads and request latencies share these bounds.
std::vector<double> LatencyBounds();

struct EngineStats {
  int waiting = 0;
  int running = 0;
  int64_t pool_pages_total = 0;
  int64_t kv_pages_used = 0;
  int64_t adapter_pages_used = 0;
  double kv_usage = 0;  // KV pages / pages that KV could use, 0..1
  int adapters_resident = 0;
  int64_t adapter_loads = 0;
  int64_t adapter_evictions = 0;
  int64_t adapter_hits = 0;
  int64_t adapter_misses = 0;
  int64_t preemptions = 0;
  int64_t generated_tokens = 0;
  int64_t steps = 0;
  MergeMode merge_mode = MergeMode::kAuto;
  std::string merged_adapter;  // empty when the base weights are pristine
  int64_t merge_switches = 0;
  double seconds_merged = 0;
  double seconds_unmerged = 0;
  std::vector<std::string> running_adapters;  // adapters of running requests
  std::vector<std::string> waiting_adapters;  // adapters of queued requests
  // For routers (the Gateway API Inference Extension's LoRA affinity): the registered adapters
  // resident in the pool, idle ones included, and those requests wait for that are not.
  std::vector<std::string> resident_adapters;
  std::vector<std::string> pending_adapters;
  int kv_block_size = 0;  // tokens per KV block
  // The host tier (parsed adapters in memory, between the store and the pool).
  int adapters_host = 0;
  int64_t host_bytes_used = 0;
  int64_t host_budget_bytes = 0;  // 0 = unlimited
  int64_t host_hits = 0;
  int64_t host_misses = 0;
  int64_t host_loads = 0;
  int64_t host_load_failures = 0;
  int64_t host_evictions = 0;
  int requests_waiting_for_adapter = 0;  // queued until the loader brings an adapter up
  int64_t adapter_pool_bytes_used = 0;
  int64_t pool_bytes_total = 0;
  CumulativeHistogram adapter_load_seconds{LatencyBounds()};  // host -> pool copies, since start
  CumulativeHistogram host_load_seconds{LatencyBounds()};     // disk -> host loads, since start
};

enum class StatKind { kGauge, kCounter };

// One numeric field of EngineStats. `proto_field` is the field of loraserve.v1.Stats with the
// same meaning; `metric` the Prometheus family (empty when the field is not exported there);
// fields sharing a family differ in the value of its one label `label_name`.
struct EngineStatField {
  std::string_view proto_field;
  std::string_view metric;
  std::string_view help;
  StatKind kind;
  double (*value)(const EngineStats&);
  std::string_view label_name = {};
  std::string_view label_value = {};
};

// Every numeric field, in the admin proto's order. merge_mode, merged_adapter, the adapter lists
// and the histogram are not numbers and are mapped by name where they are used.
std::span<const EngineStatField> EngineStatFields();

}  // namespace loraserve
