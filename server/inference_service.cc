// gRPC reactors for the inference service: thin mappings between loraserve.v1 messages and the
// transport-neutral GenerationCall, plus the tokenizer and model-info RPCs.
#include "server/inference_service.h"

#include <deque>
#include <mutex>
#include <optional>

#include "server/generate_proto.h"
#include "server/generation_call.h"
#include "server/grpc_status.h"

namespace loraserve::server {
namespace {

// The gRPC request as a call input; an unauthenticated caller gets no further.
absl::StatusOr<GenerationInput> Decode(const grpc::CallbackServerContext& context,
                                       const v1::GenerateRequest& request, const BearerAuth* auth) {
  if (absl::Status s = auth->Check(context); !s.ok()) return s;
  return FromProto(request, context.deadline());
}

// The tokenizer that spells out logprob token texts; none while the model loads, and then the
// call is refused before it has any tokens.
const Tokenizer* TokenizerOf(const ServingState& state) {
  const ServingCore* core = state.core();
  return core == nullptr ? nullptr : core->tokenizer;
}

// Generate: the whole result in one response.
class GenerateCall final : public grpc::ServerUnaryReactor, public GenerationSink {
 public:
  GenerateCall(ServingState* state, v1::GenerateResponse* response, bool return_prompt_ids)
      : call_(state, this),
        tokenizer_(TokenizerOf(*state)),
        response_(response),
        return_prompt_ids_(return_prompt_ids) {}

  void Start(absl::StatusOr<GenerationInput> input) { call_.Start(std::move(input)); }
  void OnCancel() override { call_.Cancel(); }
  void OnDone() override { delete this; }

 private:
  void OnToken(const TokenEvent&) override {}
  void OnFinish(const GenerationOutcome& outcome) override {
    if (outcome.status.ok()) FillResponse(outcome, return_prompt_ids_, tokenizer_, response_);
    Finish(ToGrpcStatus(outcome.status));
  }

  GenerationCall call_;
  const Tokenizer* const tokenizer_;
  v1::GenerateResponse* const response_;
  const bool return_prompt_ids_;
};

// GenerateStream: one message per write, tokens sampled during a write coalesced into the next,
// then the final message. At most one write or the Finish is in flight; each is decided under
// `mutex_` and started after it is released, and nothing touches the call after Finish. A thread
// that decided nothing touches nothing either once the lock is released: the engine thread is
// not one of the reactions gRPC waits for before OnDone, so after its OnFinish the thread whose
// write completes may finish the call and gRPC may delete it at once.
class GenerateStreamCall final : public grpc::ServerWriteReactor<v1::GenerateStreamResponse>,
                                 public GenerationSink {
 public:
  GenerateStreamCall(ServingState* state, bool return_prompt_ids)
      : call_(state, this),
        tokenizer_(TokenizerOf(*state)),
        return_prompt_ids_(return_prompt_ids) {}

  void Start(absl::StatusOr<GenerationInput> input) {
    call_.Start(std::move(input));
    Action action;
    {
      std::lock_guard lock(mutex_);
      started_ = true;
      action = NextLocked();
    }
    Act(action);
  }

  void OnWriteDone(bool ok) override {
    // The client is gone: let the engine free the request. A write is still marked in flight,
    // so no other thread can finish the call under us.
    if (!ok) call_.Cancel();
    Action action;
    {
      std::lock_guard lock(mutex_);
      writing_ = false;
      queue_.pop_front();
      if (!ok) {
        client_gone_ = true;
        queue_.clear();
      }
      action = NextLocked();
    }
    Act(action);
  }
  void OnCancel() override { call_.Cancel(); }
  void OnDone() override { delete this; }

 private:
  struct Action {
    const v1::GenerateStreamResponse* write = nullptr;
    std::optional<grpc::Status> finish;
    bool none() const { return write == nullptr && !finish.has_value(); }
  };

  void OnToken(const TokenEvent& event) override {
    Action action;
    {
      std::lock_guard lock(mutex_);
      if (client_gone_) return;
      if (queue_.size() < 2) queue_.emplace_back();
      v1::GenerateStreamResponse& message = queue_.back();
      if (event.token >= 0) message.add_token_ids(event.token);
      if (event.logprobs.has_value()) ToProto(*event.logprobs, tokenizer_, message.add_logprobs());
      message.mutable_text()->append(event.text);
      action = NextLocked();
    }
    Act(action);
  }

  void OnFinish(const GenerationOutcome& outcome) override {
    Action action;
    {
      std::lock_guard lock(mutex_);
      if (outcome.status.ok() && !client_gone_) {
        FillResponse(outcome, return_prompt_ids_, tokenizer_,
                     queue_.emplace_back().mutable_final());
      }
      finish_ = ToGrpcStatus(outcome.status);
      action = NextLocked();
    }
    // A write in flight finishes the call when it completes, possibly before this line: then
    // `this` may be gone, so only a thread that owns the next step may call a member.
    if (!action.none()) Act(action);
  }

  // The next write, or the Finish once everything is written. Requires mutex_.
  Action NextLocked() {
    Action action;
    if (!started_ || writing_ || finished_) return action;
    if (!queue_.empty()) {
      writing_ = true;
      action.write = &queue_.front();
    } else if (finish_.has_value()) {
      finished_ = true;
      action.finish = finish_;
    }
    return action;
  }
  void Act(const Action& action) {
    if (action.write != nullptr) {
      StartWrite(action.write);
    } else if (action.finish.has_value()) {
      Finish(*action.finish);
    }
  }

  GenerationCall call_;
  const Tokenizer* const tokenizer_;
  const bool return_prompt_ids_;
  // Guards everything below. queue_.front() is the message being written while writing_;
  // std::deque keeps it in place as more are appended.
  std::mutex mutex_;
  std::deque<v1::GenerateStreamResponse> queue_;
  bool started_ = false;  // handed back to gRPC: writes may start
  bool writing_ = false;
  bool client_gone_ = false;
  bool finished_ = false;
  std::optional<grpc::Status> finish_;
};

}  // namespace

grpc::ServerUnaryReactor* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                     const v1::GenerateRequest* request,
                                                     v1::GenerateResponse* response) {
  auto* call = new GenerateCall(state_, response, request->return_prompt_ids());
  call->Start(Decode(*context, *request, auth_));
  return call;
}

grpc::ServerWriteReactor<v1::GenerateStreamResponse>* InferenceService::GenerateStream(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  auto* call = new GenerateStreamCall(state_, request->return_prompt_ids());
  call->Start(Decode(*context, *request, auth_));
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
      auto rendered = RenderChat(FromProto(request->chat()), tokenizer, "chat");
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
