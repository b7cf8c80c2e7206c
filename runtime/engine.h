// The serving engine: a single step loop over continuous batches. Submit and Cancel are
// thread-safe and never wait for a forward pass; results stream back through callbacks that
// run on the step-loop thread (keep them short: copy and hand off).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "adapters/lora_adapter.h"
#include "runtime/adapter_loader.h"
#include "runtime/adapter_pool.h"
#include "runtime/adapter_registry.h"
#include "runtime/engine_stats.h"
#include "runtime/llama_model.h"
#include "runtime/sampler.h"
#include "runtime/token_logprobs.h"  // TokenLogprob, TokenLogprobs

namespace loraserve {

class Tokenizer;

struct AdapterRef {
  std::string id;
  float weight = 1.0f;
};

struct GenerationRequest {
  std::vector<int32_t> prompt_ids;
  std::vector<AdapterRef> adapters;  // empty = base model; several = weighted fusion
  int max_tokens = 16;
  SamplingParams sampling;
  std::vector<std::string> stop_strings;  // needs EngineOptions::tokenizer
  bool ignore_eos = false;
  // -1 = none; k >= 0: each sampled token's log-probability plus the k most likely
  // alternatives, from the model's raw logits (log_softmax before temperature, top-k and top-p,
  // like vLLM's default raw logprobs). Costs nothing when -1.
  int logprobs = -1;
  // EOS and stop strings are ignored until this many tokens are generated (vLLM's min_tokens):
  // EOS logits are masked to -inf before sampling. With ignore_eos there is nothing to mask.
  int min_tokens = 0;
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

enum class FinishReason { kLength, kStop, kCancelled, kDeadline, kError };
const char* FinishReasonName(FinishReason reason);

struct TokenEvent {
  int32_t token = 0;  // -1: no new token, only held-back text flushed at the end
  std::string text;  // newly complete UTF-8 text (empty without a tokenizer)
  std::optional<TokenLogprobs> logprobs;  // set with the token when requested (token >= 0)
};

struct RequestResult {
  std::vector<int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;  // parallel to tokens when requested
  std::string text;
  FinishReason finish_reason = FinishReason::kLength;
  absl::Status status;  // non-OK only with kError
  int prompt_tokens = 0;
  double queued_seconds = 0;       // submit -> first scheduled
  double first_token_seconds = 0;  // submit -> first token
  double total_seconds = 0;
};

struct RequestCallbacks {
  std::function<void(const TokenEvent&)> on_token;       // may be empty
  std::function<void(const RequestResult&)> on_finish;   // called exactly once
};

struct EngineOptions {
  int kv_block_size = 16;
  int64_t pool_pages = 0;       // 0 = derive from pool_bytes
  int64_t pool_bytes = 1ll << 30;  // shared by KV blocks and adapter pages
  int max_batch_tokens = 512;   // per-step token budget (chunked prefill + decode)
  int max_running = 64;
  int max_waiting = 1024;       // Submit rejects with RESOURCE_EXHAUSTED beyond this
  int max_adapters_resident = 128;
  MergeMode merge_mode = MergeMode::kAuto;
  double merge_window_seconds = 2.0;  // single-adapter traffic this long before merging
  AdapterStorage adapter_storage = AdapterStorage::kAuto;  // how adapter rows sit in the pool
  const Tokenizer* tokenizer = nullptr;  // for stop strings and streamed text
  // Byte budget of the host tier (parsed adapters in memory; 2 GiB holds ~1,100 rank-8 q/v
  // adapters of a 135M model); 0 = unlimited. Adapters that can
  // be read again from the store are evicted beyond it, least recently used first.
  size_t host_cache_bytes = 2ull << 30;
  // OpenMP threads of each forward pass: 0 = follow the cores other processes leave free
  // (runtime/thread_budget.h: every core when the machine is quiet, fewer when a neighbour
  // holds some), N = always N.
  int cpu_threads = 0;
  // Receives problems found off the request path (an adapter that fails to load); may be empty.
  std::function<void(const std::string&)> log_warning;
};



class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<LlamaModel> model,
                                                        EngineOptions options);
  ~Engine();  // stops the loop; unfinished requests finish as kCancelled

  const ModelConfig& model_config() const;

  // Validates and queues. INVALID_ARGUMENT (names the field), NOT_FOUND (unknown adapter),
  // RESOURCE_EXHAUSTED (queue full or prompt beyond the context), UNAVAILABLE (draining).
  absl::StatusOr<uint64_t> Submit(GenerationRequest request, RequestCallbacks callbacks);
  // Frees the request's KV blocks and adapter references at the next step. Unknown id: no-op.
  void Cancel(uint64_t request_id);

  // Adapters known to the engine. Unregister makes new requests NOT_FOUND at once; in-flight
  // requests keep their reference and finish.
  // An adapter already in memory goes into the host tier. With `reload` (it is in the store)
  // the host tier may evict it and read it again when a request needs it; without, it stays.
  absl::Status RegisterAdapter(std::shared_ptr<const LoraAdapter> adapter,
                               AdapterLoadFn reload = {});
  // A stored adapter registered from its index entry alone: nothing is read until a request
  // needs it, when the loader thread brings it up while the request waits in the queue.
  absl::Status RegisterStoredAdapter(AdapterSummary summary, AdapterLoadFn load);
  // The parsed adapter (from the host tier, or read now on the calling thread): for admin work
  // such as fusion. NOT_FOUND when unknown.
  absl::StatusOr<std::shared_ptr<const LoraAdapter>> GetAdapter(const std::string& id);
  absl::Status UnregisterAdapter(const std::string& id);
  absl::Status PinAdapter(const std::string& id, bool pinned);
  std::vector<AdapterInfo> ListAdapters() const;
  // The listing of one adapter (no copy of the whole registry); nullopt when unknown.
  std::optional<AdapterInfo> FindAdapter(const std::string& id) const;
  absl::Status SetMergeMode(MergeMode mode, const std::string& adapter_id);

  // Stops admitting (Submit -> UNAVAILABLE) and waits up to `deadline` for in-flight requests;
  // the rest are cancelled. Returns true when everything finished in time.
  bool Drain(std::chrono::steady_clock::duration deadline);

  EngineStats Stats() const;

 private:
  class Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loraserve
