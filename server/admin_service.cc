#include "server/admin_service.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "adapters/fusion.h"
#include "server/grpc_status.h"
#include "server/stats_proto.h"
#include "server/upload_assembler.h"

namespace loraserve::server {
namespace {

// The admin checks every call passes first: the token, then a loaded model.
absl::StatusOr<ServingCore*> Admit(grpc::CallbackServerContext* context, ServingState* state,
                                   const BearerAuth* auth) {
  if (absl::Status s = auth->Check(*context); !s.ok()) return s;
  return state->Ready();
}

// Runs a quick `body` inline after the admin checks and finishes the call with its status.
template <typename Body>
grpc::ServerUnaryReactor* RunAdmin(grpc::CallbackServerContext* context, ServingState* state,
                                   const BearerAuth* auth, Body body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto core = Admit(context, state, auth);
  reactor->Finish(ToGrpcStatus(core.ok() ? body(**core) : core.status()));
  return reactor;
}

// The same for a slow `body` (disk, hashing, SVD): it runs on `workers` and finishes the call
// from there, so it captures by value (request and response stay valid until Finish).
template <typename Body>
grpc::ServerUnaryReactor* RunAdminOnWorker(grpc::CallbackServerContext* context,
                                           ServingState* state, const BearerAuth* auth,
                                           WorkerPool* workers, Body body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto core = Admit(context, state, auth);
  absl::Status status = core.status();
  if (core.ok()) {
    status = workers->Submit(
        [reactor, core = *core, body]() mutable { reactor->Finish(ToGrpcStatus(body(*core))); });
  }
  if (!status.ok()) reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

v1::AdapterState ToProtoState(AdapterInfo::State state) {
  switch (state) {
    case AdapterInfo::State::kStored:
      return v1::ADAPTER_STATE_STORED;
    case AdapterInfo::State::kLoading:
      return v1::ADAPTER_STATE_LOADING;
    case AdapterInfo::State::kHost:
      return v1::ADAPTER_STATE_HOST;
    case AdapterInfo::State::kResident:
      return v1::ADAPTER_STATE_RESIDENT;
  }
  return v1::ADAPTER_STATE_UNSPECIFIED;
}

// Collects an upload through an UploadAssembler (the header, then file chunks in order).
// Processing happens once the client half-closes; any protocol error finishes the call at once
// and drops what was received.
class UploadCall final : public grpc::ServerReadReactor<v1::UploadAdapterRequest> {
 public:
  UploadCall(ServingState* state, WorkerPool* workers, v1::AdapterStatus* response)
      : state_(state), workers_(workers), response_(response) {}

  void Start(grpc::CallbackServerContext* context, const BearerAuth* auth) {
    absl::Status status = auth->Check(*context);
    if (status.ok()) {
      auto core = state_->Ready();
      if (core.ok()) {
        core_ = *core;
        assembler_.emplace(core_->adapters->options().max_upload_bytes);
      } else {
        status = core.status();
      }
    }
    if (!status.ok()) return Reject(status);
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client half-closed: all chunks are in. Parsing, validation, sha256 and fsync take
      // a while, so they run on a worker; no read is outstanding, so nothing races with it.
      absl::Status queued = workers_->Submit([this] { Complete(); });
      if (!queued.ok()) Reject(queued);
      return;
    }
    absl::Status status = Absorb();
    if (!status.ok()) return Reject(status);
    message_.Clear();
    StartRead(&message_);
  }
  void OnDone() override { delete this; }

 private:
  absl::Status Absorb() {
    if (message_.has_header()) {
      const v1::UploadHeader& header = message_.header();
      return assembler_->AddHeader(
          {.adapter_id = header.adapter_id(),
           .sha256 = header.sha256(),
           .peft_format = header.format() == v1::ADAPTER_FORMAT_UNSPECIFIED ||
                          header.format() == v1::ADAPTER_FORMAT_PEFT,
           .total_bytes = header.total_bytes()});
    }
    if (!message_.has_chunk()) return assembler_->AddEmpty();
    const v1::FileChunk& chunk = message_.chunk();
    return assembler_->AddChunk(chunk.file_name(), chunk.offset(), chunk.data());
  }

  void Complete() {
    if (absl::Status s = assembler_->Finish(); !s.ok()) return Reject(s);
    const UploadHeaderFields& header = *assembler_->header();
    auto adapter = core_->adapters->Upload(header.adapter_id, assembler_->files(), header.sha256);
    if (!adapter.ok()) return Reject(adapter.status());
    ToProto(*adapter, response_);
    state_->metrics().RecordUpload(true);
    Finish(grpc::Status::OK);
  }

  void Reject(const absl::Status& status) {
    if (core_ != nullptr) state_->metrics().RecordUpload(false);
    Finish(ToGrpcStatus(status));
  }

  ServingState* const state_;
  WorkerPool* const workers_;
  v1::AdapterStatus* const response_;
  ServingCore* core_ = nullptr;
  // Reactions of one call are serialised by gRPC (one read at a time) and Complete runs only
  // after the last read, so no lock is needed.
  v1::UploadAdapterRequest message_;
  std::optional<UploadAssembler> assembler_;  // set once the call is admitted
};

}  // namespace

void ToProto(const ManagedAdapter& adapter, v1::AdapterStatus* out) {
  const AdapterInfo& info = adapter.info;
  out->set_id(info.id);
  out->set_state(ToProtoState(info.state));
  out->set_pinned(info.pinned);
  out->set_rank(info.max_rank);
  out->set_alpha(info.alpha);
  for (const std::string& m : info.target_modules) out->add_target_modules(m);
  out->set_bytes(info.bytes);
  out->set_in_flight(info.in_flight);
  const auto since_epoch = info.last_used.time_since_epoch();
  out->set_last_used_unix(
      since_epoch.count() <= 0
          ? 0
          : std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count());
  out->set_sha256(adapter.sha256);
}

grpc::ServerReadReactor<v1::UploadAdapterRequest>* AdminService::UploadAdapter(
    grpc::CallbackServerContext* context, v1::AdapterStatus* response) {
  auto* call = new UploadCall(state_, workers_, response);
  call->Start(context, auth_);
  return call;
}

grpc::ServerUnaryReactor* AdminService::LoadAdapter(grpc::CallbackServerContext* context,
                                                    const v1::LoadAdapterRequest* request,
                                                    v1::AdapterStatus* response) {
  return RunAdminOnWorker(
      context, state_, auth_, workers_, [request, response](ServingCore& core) -> absl::Status {
        auto adapter = core.adapters->LoadFromPath(request->adapter_id(), request->path());
        if (!adapter.ok()) return adapter.status();
        ToProto(*adapter, response);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminService::UnloadAdapter(grpc::CallbackServerContext* context,
                                                      const v1::UnloadAdapterRequest* request,
                                                      v1::UnloadAdapterResponse* response) {
  // The store's delete renames and fsyncs: a worker's job.
  return RunAdminOnWorker(
      context, state_, auth_, workers_, [request, response](ServingCore& core) -> absl::Status {
        if (request->adapter_id().empty()) {
          return absl::InvalidArgumentError("adapter_id: must not be empty");
        }
        auto in_flight = core.adapters->Unload(request->adapter_id(), request->keep_in_store());
        if (!in_flight.ok()) return in_flight.status();
        response->set_in_flight(*in_flight);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminService::ListAdapters(grpc::CallbackServerContext* context,
                                                     const v1::ListAdaptersRequest*,
                                                     v1::ListAdaptersResponse* response) {
  return RunAdmin(context, state_, auth_, [&](ServingCore& core) -> absl::Status {
    for (const ManagedAdapter& adapter : core.adapters->List()) {
      ToProto(adapter, response->add_adapters());
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::PinAdapter(grpc::CallbackServerContext* context,
                                                   const v1::PinAdapterRequest* request,
                                                   v1::AdapterStatus* response) {
  return RunAdmin(context, state_, auth_, [&](ServingCore& core) -> absl::Status {
    if (request->adapter_id().empty()) {
      return absl::InvalidArgumentError("adapter_id: must not be empty");
    }
    auto adapter = core.adapters->Pin(request->adapter_id(), request->pinned());
    if (!adapter.ok()) return adapter.status();
    ToProto(*adapter, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::FuseAdapters(grpc::CallbackServerContext* context,
                                                     const v1::FuseAdaptersRequest* request,
                                                     v1::AdapterStatus* response) {
  // Validation is quick, but fusion's SVD is seconds of math: all of it runs on a worker.
  return RunAdminOnWorker(
      context, state_, auth_, workers_, [request, response](ServingCore& core) -> absl::Status {
        if (request->new_adapter_id().empty()) {
          return absl::InvalidArgumentError("new_adapter_id: must not be empty");
        }
        if (request->sources().empty()) {
          return absl::InvalidArgumentError("sources: name at least one adapter to fuse");
        }
        if (request->method() == v1::FUSE_METHOD_UNSPECIFIED ||
            !v1::FuseMethod_IsValid(request->method())) {
          return absl::InvalidArgumentError("method: choose a FuseMethod (e.g. FUSE_METHOD_CAT)");
        }
        // FUSE_METHOD_DARE_TIES_SVD -> "dare_ties_svd", PEFT's combination_type.
        auto combination = ParseFuseCombination(absl::AsciiStrToLower(
            absl::StripPrefix(v1::FuseMethod_Name(request->method()), "FUSE_METHOD_")));
        if (!combination.ok()) return combination.status();
        FuseOptions options;
        options.combination = *combination;
        if (request->rank() < 0) return absl::InvalidArgumentError("rank: must be >= 0");
        if (request->rank() > 0) options.svd_rank = request->rank();
        if (request->density() != 0) options.density = request->density();
        if (request->has_svd_clamp()) options.svd_clamp = request->svd_clamp();
        options.majority_sign =
            request->majority_sign_method() == v1::MAJORITY_SIGN_METHOD_FREQUENCY
                ? MajoritySign::kFrequency
                : MajoritySign::kTotal;
        options.seed = request->seed();
        std::vector<std::pair<std::string, double>> sources;
        for (int i = 0; i < request->sources_size(); ++i) {
          const v1::FuseSource& source = request->sources(i);
          if (source.adapter_id().empty()) {
            return absl::InvalidArgumentError(
                absl::StrCat("sources[", i, "].adapter_id: must not be empty"));
          }
          sources.emplace_back(source.adapter_id(), source.weight());
        }
        auto fused = core.adapters->Fuse(request->new_adapter_id(), sources, options);
        if (!fused.ok()) return fused.status();
        ToProto(*fused, response);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminService::SetMergeMode(grpc::CallbackServerContext* context,
                                                     const v1::SetMergeModeRequest* request,
                                                     v1::SetMergeModeResponse* response) {
  return RunAdmin(context, state_, auth_, [&](ServingCore& core) -> absl::Status {
    MergeMode mode;
    switch (request->mode()) {
      case v1::MERGE_MODE_AUTO:
        mode = MergeMode::kAuto;
        break;
      case v1::MERGE_MODE_NEVER:
        mode = MergeMode::kNever;
        break;
      case v1::MERGE_MODE_FORCED:
        mode = MergeMode::kForced;
        if (request->adapter_id().empty()) {
          return absl::InvalidArgumentError("adapter_id: MERGE_MODE_FORCED needs an adapter");
        }
        break;
      default:
        return absl::InvalidArgumentError("mode: set AUTO, NEVER or FORCED");
    }
    if (absl::Status s = core.engine->SetMergeMode(mode, request->adapter_id()); !s.ok()) {
      return s;
    }
    response->set_mode(request->mode());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::GetStats(grpc::CallbackServerContext* context,
                                                 const v1::GetStatsRequest*, v1::Stats* response) {
  return RunAdmin(context, state_, auth_, [&](ServingCore& core) {
    return FillStatsProto(core.engine->Stats(), response);
  });
}

}  // namespace loraserve::server
