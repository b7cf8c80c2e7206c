#include "server/inference_service.h"

#include <chrono>
#include <deque>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"
#include "server/request_builder.h"

namespace loraserve::server {
namespace {

using Clock = std::chrono::steady_clock;

// The status a finished engine request ends its call with.
grpc::Status FinishStatus(const RequestResult& result, bool draining) {
  switch (result.finish_reason) {
    case FinishReason::kLength:
    case FinishReason::kStop:
      return grpc::Status::OK;
    case FinishReason::kDeadline:
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "request deadline passed before generation finished");
    case FinishReason::kCancelled:
      if (draining) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "server shut down before the request finished: retry");
      }
      return grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled");
    case FinishReason::kError:
      break;
  }
  return ToGrpcStatus(result.status.ok() ? absl::InternalError("generation failed")
                                         : result.status);
}

// What both generate calls share: validation, submission, cancellation and metrics. A call's
// lifetime ends in OnDone; Finish is called exactly once, by whichever thread decides it under
// `mutex_`, and nothing touches the call after that decision.
class EngineCall {
 protected:
  EngineCall(ServingState* state, grpc::CallbackServerContext* context)
      : state_(state), context_(context), arrival_(Clock::now()) {}

  // Submits; OK or the status to finish with right away.
  absl::Status Submit(const v1::GenerateRequest& proto, const BearerAuth* auth) {
    if (absl::Status s = auth->Check(*context_); !s.ok()) return s;
    auto core = state_->Ready();
    if (!core.ok()) return core.status();
    engine_ = (*core)->engine;
    auto built = BuildGenerationRequest(proto, (*core)->tokenizer, engine_->model_config(),
                                        (*core)->default_max_tokens, context_->deadline());
    if (!built.ok()) return built.status();
    adapter_label_ = built->adapter_label;
    prompt_ids_ = built->request.prompt_ids;
    return_prompt_ids_ = proto.return_prompt_ids();
    RequestCallbacks callbacks;
    callbacks.on_token = [this](const TokenEvent& event) {
      if (event.token < 0) return OnToken(event);  // held-back text only
      const Clock::time_point now = Clock::now();
      if (last_token_.has_value()) {
        state_->metrics().RecordInterToken(std::chrono::duration<double>(now - *last_token_).count());
      }
      last_token_ = now;
      OnToken(event);
    };
    callbacks.on_finish = [this](const RequestResult& result) {
      state_->metrics().RecordFinished(adapter_label_, result);
      OnFinish(result);
    };
    state_->CallStarted();
    auto id = engine_->Submit(std::move(built->request), std::move(callbacks));
    if (!id.ok()) {
      state_->CallFinished();
      return id.status();
    }
    submitted_ = true;
    bool cancel_now;
    {
      std::lock_guard lock(mutex_);
      id_ = *id;
      cancel_now = cancelled_;
    }
    if (cancel_now) engine_->Cancel(*id);
    return absl::OkStatus();
  }

  void CancelEngineRequest() {
    std::optional<uint64_t> id;
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
      id = id_;
    }
    if (id.has_value()) engine_->Cancel(*id);
  }

  // Called right before Finish: the call's last act.
  void RecordStatus(const grpc::Status& status) {
    state_->metrics().RecordRequest(adapter_label_, GrpcCodeName(status.error_code()));
    if (submitted_) state_->CallFinished();
  }

  virtual void OnToken(const TokenEvent& event) = 0;
  virtual void OnFinish(const RequestResult& result) = 0;
  virtual ~EngineCall() = default;

  ServingState* const state_;
  grpc::CallbackServerContext* const context_;
  const Clock::time_point arrival_;
  Engine* engine_ = nullptr;
  std::string adapter_label_;
  std::vector<int32_t> prompt_ids_;
  bool return_prompt_ids_ = false;
  bool submitted_ = false;  // counted in ServingState's active calls
  std::optional<Clock::time_point> last_token_;  // engine thread only

  // Guards id_, cancelled_ and the subclasses' state marked "guarded by mutex_".
  std::mutex mutex_;
  std::optional<uint64_t> id_;
  bool cancelled_ = false;
};

class GenerateCall final : public grpc::ServerUnaryReactor, public EngineCall {
 public:
  GenerateCall(ServingState* state, grpc::CallbackServerContext* context,
               v1::GenerateResponse* response)
      : EngineCall(state, context), response_(response) {}

  void Start(const v1::GenerateRequest& request, const BearerAuth* auth) {
    if (absl::Status s = Submit(request, auth); !s.ok()) return FinishNow(ToGrpcStatus(s));
    std::optional<grpc::Status> finish;
    {
      std::lock_guard lock(mutex_);
      started_ = true;
      finish.swap(pending_);
    }
    if (finish.has_value()) FinishNow(*finish);
  }

  void OnCancel() override { CancelEngineRequest(); }
  void OnDone() override { delete this; }

 private:
  void OnToken(const TokenEvent&) override {}
  void OnFinish(const RequestResult& result) override {
    grpc::Status status = FinishStatus(result, !state_->Ready().ok());
    if (status.ok()) FillResponse(result, prompt_ids_, return_prompt_ids_, response_);
    {
      std::lock_guard lock(mutex_);
      if (!started_) {
        pending_ = status;
        return;
      }
    }
    FinishNow(status);
  }
  void FinishNow(const grpc::Status& status) {
    RecordStatus(status);
    Finish(status);
  }

  v1::GenerateResponse* const response_;
  bool started_ = false;                 // guarded by mutex_
  std::optional<grpc::Status> pending_;  // guarded by mutex_: finished before Start returned
};

class GenerateStreamCall final : public grpc::ServerWriteReactor<v1::GenerateStreamResponse>,
                                 public EngineCall {
 public:
  GenerateStreamCall(ServingState* state, grpc::CallbackServerContext* context)
      : EngineCall(state, context) {}

  void Start(const v1::GenerateRequest& request, const BearerAuth* auth) {
    if (absl::Status s = Submit(request, auth); !s.ok()) {
      const grpc::Status status = ToGrpcStatus(s);
      RecordStatus(status);
      return Finish(status);
    }
    {
      std::lock_guard lock(mutex_);
      started_ = true;
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    bool lost = false;
    {
      std::lock_guard lock(mutex_);
      writing_ = false;
      queue_.pop_front();
      if (!ok) {
        // The client is gone: stop sending and let the engine free the request.
        lost = client_gone_ = true;
        queue_.clear();
      }
    }
    if (lost) CancelEngineRequest();
    Pump();
  }
  void OnCancel() override { CancelEngineRequest(); }
  void OnDone() override { delete this; }

 private:
  void OnToken(const TokenEvent& event) override {
    {
      std::lock_guard lock(mutex_);
      if (client_gone_) return;
      // Tokens sampled while a write is in flight are coalesced into one message.
      if (queue_.size() < 2) queue_.emplace_back();
      v1::GenerateStreamResponse& message = queue_.back();
      if (event.token >= 0) message.add_token_ids(event.token);
      message.mutable_text()->append(event.text);
    }
    Pump();
  }

  void OnFinish(const RequestResult& result) override {
    const bool draining = !state_->Ready().ok();
    grpc::Status status = FinishStatus(result, draining);
    {
      std::lock_guard lock(mutex_);
      if (client_gone_ && status.ok()) status = grpc::Status::CANCELLED;
      if (status.ok()) {
        v1::GenerateStreamResponse& last = queue_.emplace_back();
        FillResponse(result, prompt_ids_, return_prompt_ids_, last.mutable_final());
      }
      finish_ = status;
    }
    Pump();
  }

  // Starts the next write, or finishes once everything is written; at most one of either is
  // in flight, and Finish is the last thing any thread does with this call.
  void Pump() {
    const v1::GenerateStreamResponse* to_write = nullptr;
    std::optional<grpc::Status> finish;
    {
      std::lock_guard lock(mutex_);
      if (!started_ || writing_ || finished_) return;
      if (!queue_.empty()) {
        writing_ = true;
        to_write = &queue_.front();
      } else if (finish_.has_value()) {
        finished_ = true;
        finish = finish_;
      }
    }
    if (to_write != nullptr) {
      StartWrite(to_write);
    } else if (finish.has_value()) {
      RecordStatus(*finish);
      Finish(*finish);
    }
  }

  // All guarded by mutex_. queue_.front() is the message being written while writing_;
  // std::deque keeps it in place as more are appended.
  std::deque<v1::GenerateStreamResponse> queue_;
  bool started_ = false;
  bool writing_ = false;
  bool client_gone_ = false;
  bool finished_ = false;
  std::optional<grpc::Status> finish_;
};

}  // namespace

grpc::ServerUnaryReactor* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                     const v1::GenerateRequest* request,
                                                     v1::GenerateResponse* response) {
  auto* call = new GenerateCall(state_, context, response);
  call->Start(*request, auth_);
  return call;
}

grpc::ServerWriteReactor<v1::GenerateStreamResponse>* InferenceService::GenerateStream(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  auto* call = new GenerateStreamCall(state_, context);
  call->Start(*request, auth_);
  return call;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto run = [&]() -> absl::Status {
    if (absl::Status s = auth_->Check(*context); !s.ok()) return s;
    auto core = state_->Ready();
    if (!core.ok()) return core.status();
    const Tokenizer* tokenizer = (*core)->tokenizer;
    if (tokenizer == nullptr) {
      return absl::FailedPreconditionError("the served model has no tokenizer.json");
    }
    std::vector<int32_t> ids;
    if (request->input_case() == v1::TokenizeRequest::kText) {
      ids = tokenizer->Encode(request->text(), request->add_special_tokens());
    } else if (request->input_case() == v1::TokenizeRequest::kChat) {
      auto rendered = RenderChat(request->chat(), tokenizer, "chat");
      if (!rendered.ok()) return rendered.status();
      response->set_rendered(*rendered);
      ids = tokenizer->Encode(*rendered, /*add_special_tokens=*/false);
    } else {
      return absl::InvalidArgumentError("input: set one of text or chat");
    }
    for (int32_t id : ids) {
      response->add_ids(id);
      response->add_pieces(tokenizer->Decode(std::span<const int32_t>(&id, 1), false));
    }
    return absl::OkStatus();
  };
  reactor->Finish(ToGrpcStatus(run()));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest*,
                                                         v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto run = [&]() -> absl::Status {
    if (absl::Status s = auth_->Check(*context); !s.ok()) return s;
    auto core = state_->Ready();
    if (!core.ok()) return core.status();
    const ModelConfig& config = (*core)->engine->model_config();
    response->set_model_path((*core)->model_path);
    response->set_architecture(config.architecture);
    response->set_model_type(config.model_type);
    response->set_vocab_size(config.vocab_size);
    response->set_hidden_size(config.hidden_size);
    response->set_num_layers(config.num_layers);
    response->set_max_context(config.max_position_embeddings);
    for (int id : config.eos_token_ids) response->add_eos_token_ids(id);
    response->set_max_lora_rank((*core)->adapters->options().limits.max_rank);
    for (const char* name : kModuleNames) response->add_lora_target_modules(name);
    return absl::OkStatus();
  };
  reactor->Finish(ToGrpcStatus(run()));
  return reactor;
}

}  // namespace loraserve::server
