// One generation call, whatever the transport: validate -> build the engine request -> submit
// -> stream tokens -> finish or cancel -> record metrics. A transport decodes its request into a
// GenerationInput and writes what a GenerationSink receives; it holds no request logic.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/engine.h"
#include "server/generation_input.h"
#include "server/serving_state.h"

namespace loraserve::server {

struct GenerationUsage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

struct GenerationTimings {
  double queued_seconds = 0;       // arrival -> first scheduled
  double first_token_seconds = 0;  // arrival -> first token
  double total_seconds = 0;
};

// How a call ended. `status` is OK exactly when generation ran to its length or a stop; a
// rejected call (invalid input, unknown adapter, queue full) has no tokens and kError.
struct GenerationOutcome {
  absl::Status status;
  FinishReason finish_reason = FinishReason::kError;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprobs> logprobs;  // parallel to token_ids when the input asked for them
  std::string text;
  std::vector<int32_t> prompt_ids;  // as tokenized; empty when rejected before that
  GenerationUsage usage;
  GenerationTimings timings;
};

// The transport's side of a call. OnToken runs on the engine's step-loop thread (keep it short:
// copy and hand off); OnFinish runs there or on the thread that called Start. The two never
// overlap, tokens arrive in order, and OnFinish comes exactly once, last.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // `event.token` is -1 when only held-back text is flushed at the end.
  virtual void OnToken(const TokenEvent& event) = 0;
  // The call never touches itself or the sink after entering OnFinish, so OnFinish may lead,
  // on any thread, to the destruction of both.
  virtual void OnFinish(const GenerationOutcome& outcome) = 0;
};

class GenerationCall {
 public:
  // `state` and `sink` outlive the call.
  GenerationCall(ServingState* state, GenerationSink* sink);
  // Destroy only once OnFinish has been entered. Until then the call counts as active in
  // ServingState, so a draining server waits for the transport's last write.
  ~GenerationCall();
  GenerationCall(const GenerationCall&) = delete;
  GenerationCall& operator=(const GenerationCall&) = delete;

  // Runs the call; once. A non-OK `input` is the transport's own refusal (authentication, a
  // request it could not decode): it is recorded like any other outcome and finishes the call.
  void Start(absl::StatusOr<GenerationInput> input);

  // The client is gone: frees the engine request at its next step, and the sink gets OnFinish
  // with CANCELLED. Any thread, any time before the call is destroyed; idempotent.
  void Cancel();

 private:
  // OK once submitted, else the status to finish with at once.
  absl::Status Submit(absl::StatusOr<GenerationInput> input);
  void OnEngineToken(const TokenEvent& event);
  void OnEngineFinish(const RequestResult& result);
  absl::Status FinishStatus(const RequestResult& result);
  // Records the outcome and hands it to the sink: the call's last act.
  void Finish(const GenerationOutcome& outcome);

  ServingState* const state_;
  GenerationSink* const sink_;
  Engine* engine_ = nullptr;   // set in Submit before the engine can call back
  std::string adapter_label_;  // metrics label; set in Submit
  std::vector<int32_t> prompt_ids_;
  bool counted_ = false;  // holds one of ServingState's active calls
  std::optional<std::chrono::steady_clock::time_point> last_token_;  // engine thread only

  // Guards id_, cancelled_, started_ and pending_: Start, Cancel and the engine's callbacks
  // race on them.
  std::mutex mutex_;
  std::optional<uint64_t> id_;
  bool cancelled_ = false;
  bool started_ = false;  // Start has submitted; before that OnFinish waits in pending_
  std::optional<GenerationOutcome> pending_;
};

}  // namespace loraserve::server
