// One request inside the engine: its tokens (prompt + generated), how many have KV in the
// cache, its KV pages and adapter references, sampler and streamed-text state. Owned and
// touched only by the step loop.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/adapter_set.h"
#include "runtime/engine.h"
#include "runtime/resident_adapter.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer/incremental_detokenizer.h"

namespace loraserve {

class Tokenizer;

struct RequestState {
  using Clock = std::chrono::steady_clock;

  uint64_t id = 0;
  GenerationRequest request;
  RequestCallbacks callbacks;
  WeightedAdapters adapters;
  std::vector<std::string> pool_keys;  // parallel to adapters
  std::string set_key;                 // identical sets share a LoRA segment

  std::vector<int32_t> tokens;  // prompt, then generated tokens
  std::vector<int32_t> generated;
  int num_computed = 0;         // tokens whose KV is in the cache (0 after preemption)
  std::vector<int32_t> pages;   // block table
  bool adapters_acquired = false;
  std::vector<const ResidentLora*> resident;
  std::unique_ptr<Sampler> sampler;
  bool finished = false;

  Clock::time_point submitted;
  std::optional<Clock::time_point> first_scheduled;
  std::optional<Clock::time_point> first_token;

  void Init(GenerationRequest req, RequestCallbacks cb, Clock::time_point now);
  int pending_tokens() const { return static_cast<int>(tokens.size()) - num_computed; }
  // Records a sampled token, streams new text; returns why the request ends, if it does.
  std::optional<FinishReason> Append(int32_t token, bool is_eos, const Tokenizer* tokenizer,
                                     Clock::time_point now);
  RequestResult MakeResult(FinishReason reason, absl::Status status, Clock::time_point now);

 private:
  void Stream(int32_t token, size_t upto);

  // Decodes only the newest tokens each step (a full re-decode per token is quadratic).
  std::optional<IncrementalDetokenizer> detokenizer_;
  std::string text_;     // decoded generated text (complete UTF-8 only)
  size_t streamed_ = 0;  // bytes of text_ already sent through on_token
  size_t stop_holdback_ = 0;
};

}  // namespace loraserve
