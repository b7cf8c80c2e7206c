// The call lifecycle shared by every transport. The engine may finish a request before Submit
// has even returned; OnFinish is then held back until Start is done with the call, because the
// sink may destroy the call from OnFinish.
#include "server/generation_call.h"

#include <utility>

namespace loraserve::server {

GenerationCall::GenerationCall(ServingState* state, GenerationSink* sink)
    : state_(state), sink_(sink) {}

GenerationCall::~GenerationCall() {
  if (counted_) state_->CallFinished();
}

void GenerationCall::Start(absl::StatusOr<GenerationInput> input) {
  if (absl::Status s = Submit(std::move(input)); !s.ok()) {
    GenerationOutcome rejected;
    rejected.status = std::move(s);
    rejected.prompt_ids = prompt_ids_;
    return Finish(rejected);
  }
  std::optional<GenerationOutcome> early;
  {
    std::lock_guard lock(mutex_);
    started_ = true;
    early.swap(pending_);
  }
  if (early.has_value()) Finish(*early);
}

absl::Status GenerationCall::Submit(absl::StatusOr<GenerationInput> input) {
  if (!input.ok()) return input.status();
  auto core = state_->Ready();
  if (!core.ok()) return core.status();
  engine_ = (*core)->engine;
  auto built = BuildGenerationRequest(*input, (*core)->tokenizer, engine_->model_config(),
                                      (*core)->default_max_tokens);
  if (!built.ok()) return built.status();
  adapter_label_ = built->adapter_label;
  prompt_ids_ = built->request.prompt_ids;
  RequestCallbacks callbacks;
  callbacks.on_token = [this](const TokenEvent& event) { OnEngineToken(event); };
  callbacks.on_finish = [this](const RequestResult& result) { OnEngineFinish(result); };
  // Counted before Submit: the request may finish before Submit returns.
  state_->CallStarted();
  counted_ = true;
  auto id = engine_->Submit(std::move(built->request), std::move(callbacks));
  if (!id.ok()) {
    state_->CallFinished();
    counted_ = false;
    return id.status();
  }
  bool cancel_now;
  {
    std::lock_guard lock(mutex_);
    id_ = *id;
    cancel_now = cancelled_;
  }
  if (cancel_now) engine_->Cancel(*id);
  return absl::OkStatus();
}

void GenerationCall::Cancel() {
  std::optional<uint64_t> id;
  {
    std::lock_guard lock(mutex_);
    cancelled_ = true;
    id = id_;
  }
  // engine_ was set before id_, and reading id_ under the lock orders the two.
  if (id.has_value()) engine_->Cancel(*id);
}

void GenerationCall::OnEngineToken(const TokenEvent& event) {
  if (event.token >= 0) {
    const auto now = std::chrono::steady_clock::now();
    if (last_token_.has_value()) {
      state_->metrics().RecordInterToken(std::chrono::duration<double>(now - *last_token_).count());
    }
    last_token_ = now;
  }
  sink_->OnToken(event);
}

absl::Status GenerationCall::FinishStatus(const RequestResult& result) {
  switch (result.finish_reason) {
    case FinishReason::kLength:
    case FinishReason::kStop: {
      std::lock_guard lock(mutex_);
      // Finished while the client went away: nobody reads the result.
      if (cancelled_) return absl::CancelledError("request cancelled");
      return absl::OkStatus();
    }
    case FinishReason::kDeadline:
      return absl::DeadlineExceededError("request deadline passed before generation finished");
    case FinishReason::kCancelled:
      if (!state_->Ready().ok()) {
        return absl::UnavailableError("server shut down before the request finished: retry");
      }
      return absl::CancelledError("request cancelled");
    case FinishReason::kError:
      break;
  }
  return result.status.ok() ? absl::InternalError("generation failed") : result.status;
}

void GenerationCall::OnEngineFinish(const RequestResult& result) {
  state_->metrics().RecordFinished(adapter_label_, result);
  GenerationOutcome outcome;
  outcome.status = FinishStatus(result);
  outcome.finish_reason = result.finish_reason;
  outcome.token_ids = result.tokens;
  outcome.logprobs = result.logprobs;
  outcome.text = result.text;
  outcome.prompt_ids = prompt_ids_;
  outcome.usage.prompt_tokens = result.prompt_tokens;
  outcome.usage.completion_tokens = static_cast<int>(result.tokens.size());
  outcome.timings.queued_seconds = result.queued_seconds;
  outcome.timings.first_token_seconds = result.first_token_seconds;
  outcome.timings.total_seconds = result.total_seconds;
  {
    std::lock_guard lock(mutex_);
    if (!started_) {
      pending_ = std::move(outcome);
      return;
    }
  }
  Finish(outcome);
}

void GenerationCall::Finish(const GenerationOutcome& outcome) {
  state_->metrics().RecordRequest(adapter_label_, absl::StatusCodeToString(outcome.status.code()));
  sink_->OnFinish(outcome);
}

}  // namespace loraserve::server
