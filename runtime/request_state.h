// One request inside the engine: its tokens (prompt + generated), how many have KV in the
// cache, its KV pages and adapter references, sampler and streamed-text state. Owned and
// touched only by the step loop.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/adapter_loader.h"
#include "runtime/adapter_set.h"
#include "runtime/engine.h"
#include "runtime/resident_adapter.h"
#include "runtime/sampler.h"
#include "runtime/token_logprobs.h"
#include "runtime/tokenizer/incremental_detokenizer.h"

namespace loraserve {

class Tokenizer;

struct SampledToken {
  int32_t token = 0;
  std::optional<TokenLogprobs> logprobs;  // set when the request asked for them
};

struct RequestState {
  using Clock = std::chrono::steady_clock;

  uint64_t id = 0;
  GenerationRequest request;
  RequestCallbacks callbacks;
  WeightedAdapters adapters;
  std::vector<std::string> pool_keys;  // parallel to adapters
  std::string set_key;                 // identical sets share a LoRA segment
  // Adapters still on their way up from the store (adapters[index].first is null until the
  // loader brings them); the request waits outside the scheduler until this is empty.
  struct MissingAdapter {
    size_t index = 0;
    std::string pool_key;
    AdapterLoadFn load;
  };
  std::vector<MissingAdapter> missing;

  std::vector<int32_t> tokens;  // prompt, then generated tokens
  std::vector<int32_t> generated;
  std::vector<TokenLogprobs> logprobs;  // parallel to generated when request.logprobs >= 0
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
  // Chooses the next token from this request's row of the step's logits. While fewer than
  // min_tokens are generated (and EOS is not ignored) the EOS entries are set to -inf for the
  // sampler and restored before returning, so the row and any logprobs stay the model's.
  SampledToken SampleNext(std::span<float> logits, std::span<const int32_t> eos_ids);
  // Records a sampled token (with its logprobs when the request asked), streams new text;
  // returns why the request ends, if it does.
  std::optional<FinishReason> Append(int32_t token, bool is_eos, const Tokenizer* tokenizer,
                                     Clock::time_point now,
                                     std::optional<TokenLogprobs> token_logprobs = std::nullopt);
  // Flushes the detokenizer and any held-back text to the stream, so the streamed text and
  // the result's text are the same bytes.
  RequestResult MakeResult(FinishReason reason, absl::Status status, Clock::time_point now);

 private:
  void Stream(int32_t token, size_t upto, const TokenLogprobs* token_logprobs);
  // Appends decoded text; true when it completes a stop string (text_ is then cut before it).
  bool AppendText(const std::string& delta);

  // Decodes only the newest tokens each step (a full re-decode per token is quadratic).
  std::optional<IncrementalDetokenizer> detokenizer_;
  std::string text_;     // decoded generated text (complete UTF-8 only)
  size_t streamed_ = 0;  // bytes of text_ already sent through on_token
  size_t stop_holdback_ = 0;
  bool stopped_by_string_ = false;  // text_ ends where a stop string began
};

}  // namespace loraserve
