// The step loop's orchestration. Each iteration: take new requests, cancels and admin ops
// (under mu_, briefly); expire cancelled and late requests; let the merge policy decide; ask the
// scheduler for the step's batch; build the plan; run ONE forward pass with no lock held; sample
// and stream; publish stats. Policy lives in Scheduler, MergePolicy and AdapterRegistry; see
// docs/scheduling.md.
#include "runtime/engine.h"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>

#include <omp.h>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "runtime/adapter_loader.h"
#include "runtime/adapter_registry.h"
#include "runtime/adapter_set.h"
#include "runtime/host_adapter_cache.h"
#include "runtime/merge_controller.h"
#include "runtime/merge_policy.h"
#include "runtime/page_pool.h"
#include "runtime/pool_resources.h"
#include "runtime/request_state.h"
#include "runtime/request_validation.h"
#include "runtime/scheduler.h"
#include "runtime/step_plan.h"
#include "runtime/thread_budget.h"
#include "runtime/tokenizer/tokenizer.h"

namespace loraserve {

using Clock = std::chrono::steady_clock;

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kDeadline: return "deadline";
    case FinishReason::kError: return "error";
  }
  return "?";
}

namespace {

std::string IdOfPoolKey(const std::string& key) { return key.substr(0, key.rfind('#')); }

int32_t PoolPages(const EngineOptions& options, const kernels::KvPageLayout& layout) {
  if (options.pool_pages > 0) return static_cast<int32_t>(options.pool_pages);
  return static_cast<int32_t>(std::max<int64_t>(
      8, options.pool_bytes / static_cast<int64_t>(layout.page_floats() * sizeof(float))));
}

}  // namespace

class Engine::Impl {
 public:
  Impl(std::unique_ptr<LlamaModel> model, EngineOptions options,
       std::unique_ptr<PoolStorage> memory, kernels::KvPageLayout layout)
      : model_(std::move(model)),
        options_(std::move(options)),
        layout_(layout),
        memory_(std::move(memory)),
        pages_(memory_->page_units(), memory_->num_pages()),
        adapters_(&pages_, memory_.get(), model_->config(),
                  [this](int layer, Module module) { return model_->PristineWeight(layer, module); },
                  options_.adapter_storage),
        resources_(&pages_, &adapters_, layout_.block_size, options_.max_adapters_resident),
        scheduler_({options_.max_batch_tokens, options_.max_running}, &resources_, &resources_),
        merge_(model_.get()),
        host_(options_.host_cache_bytes) {
    eos_ids_ = model_->config().eos_token_ids;
    if (options_.tokenizer != nullptr) {
      for (int32_t id : options_.tokenizer->eos_ids()) eos_ids_.push_back(id);
    }
    merge_mode_ = options_.merge_mode;
    // The layout is known before the first step: a scrape that comes first reads it too.
    stats_.kv_block_size = layout_.block_size;
    stats_.pool_pages_total = pages_.num_pages();
    stats_.merge_mode = merge_mode_;
    stats_.host_budget_bytes = static_cast<int64_t>(options_.host_cache_bytes);
    // Completions go to the step loop like admin ops: only it touches waiting requests.
    loader_ = std::make_unique<AdapterLoader>(
        [this](const std::string& key, absl::StatusOr<std::shared_ptr<const LoraAdapter>> adapter,
               double seconds) {
          PostOp([this, key, adapter = std::move(adapter), seconds] {
            OnLoaded(key, adapter, seconds);
          });
        });
    thread_ = std::thread([this] { Loop(); });
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  const ModelConfig& config() const { return model_->config(); }

  absl::StatusOr<uint64_t> Submit(GenerationRequest request, RequestCallbacks callbacks) {
    const RequestLimits limits{&model_->config(), layout_.block_size, pages_.num_pages(),
                               options_.tokenizer != nullptr};
    if (auto s = ValidateRequest(request, limits); !s.ok()) return s;
    auto state = std::make_unique<RequestState>();
    std::vector<AdapterChoice> choices;
    for (size_t i = 0; i < request.adapters.size(); ++i) {
      auto entry = registry_.Use(request.adapters[i].id);
      if (!entry.ok()) {
        return absl::NotFoundError(absl::StrCat("adapters[", i, "].adapter_id: adapter '",
                                                request.adapters[i].id, "' is not loaded"));
      }
      std::shared_ptr<const LoraAdapter> adapter = host_.Get(entry->pool_key);
      if (adapter == nullptr) {
        if (!entry->load) {
          return absl::InternalError(absl::StrCat("adapters[", i, "].adapter_id: adapter '",
                                                  request.adapters[i].id,
                                                  "' has neither a host copy nor a store copy"));
        }
        state->missing.push_back({i, entry->pool_key, entry->load});
      }
      choices.push_back({request.adapters[i].id, entry->summary.use_dora,
                         request.adapters[i].weight});
      state->adapters.emplace_back(std::move(adapter), request.adapters[i].weight);
      state->pool_keys.push_back(entry->pool_key);
    }
    if (auto s = ValidateAdapterChoices(choices); !s.ok()) return s;
    // With every adapter in memory the pool check is made now; otherwise once they are loaded.
    if (state->missing.empty()) {
      if (auto s = CheckFits(request, state->adapters); !s.ok()) return s;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_ || stopping_) return absl::UnavailableError("server is draining");
    if (static_cast<int>(incoming_.size()) + waiting_count_ >= options_.max_waiting) {
      return absl::ResourceExhaustedError(
          absl::StrCat("waiting queue is full (", options_.max_waiting, " requests)"));
    }
    state->id = next_id_++;
    state->Init(std::move(request), std::move(callbacks), Clock::now());
    const uint64_t id = state->id;
    ++in_flight_;
    incoming_.push_back(std::move(state));
    cv_.notify_all();
    return id;
  }

  void Cancel(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.insert(id);
    cv_.notify_all();
  }

  absl::Status RegisterAdapter(std::shared_ptr<const LoraAdapter> adapter, AdapterLoadFn reload) {
    if (adapter->num_layers != model_->config().num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter '", adapter->id, "' was built for a different base model"));
    }
    const bool reloadable = static_cast<bool>(reload);
    auto key = registry_.Register(SummarizeAdapter(*adapter), std::move(reload));
    if (!key.ok()) return key.status();
    host_.Insert(*key, std::move(adapter), reloadable);
    return absl::OkStatus();
  }

  absl::Status RegisterStoredAdapter(AdapterSummary summary, AdapterLoadFn load) {
    if (summary.num_layers != model_->config().num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter '", summary.id, "' was built for a different base model"));
    }
    if (!load) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter '", summary.id, "': a stored adapter needs a loader"));
    }
    return registry_.Register(std::move(summary), std::move(load)).status();
  }

  absl::StatusOr<std::shared_ptr<const LoraAdapter>> GetAdapter(const std::string& id) {
    std::optional<RegisteredAdapter> entry = registry_.Find(id);
    if (!entry) return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not loaded"));
    if (auto adapter = host_.Peek(entry->pool_key)) return adapter;
    if (!entry->load) {
      return absl::InternalError(absl::StrCat("adapter '", id, "' has no copy to read"));
    }
    absl::StatusOr<std::shared_ptr<const LoraAdapter>> adapter = entry->load();
    if (adapter.ok() && registry_.PoolKey(id) == entry->pool_key) {
      host_.Insert(entry->pool_key, *adapter, /*reloadable=*/true);
    }
    return adapter;
  }

  absl::Status UnregisterAdapter(const std::string& id) {
    auto key = registry_.Unregister(id);
    if (!key.ok()) return key.status();
    host_.Erase(*key);
    PostOp([this, key = *key] { retired_keys_.insert(key); });
    return absl::OkStatus();
  }

  absl::Status PinAdapter(const std::string& id, bool pinned) {
    auto key = registry_.SetPinned(id, pinned);
    if (!key.ok()) return key.status();
    host_.SetPinned(*key, pinned);
    AdapterLoadFn load;
    if (pinned && !host_.Contains(*key)) {
      if (std::optional<RegisteredAdapter> entry = registry_.Find(id)) load = entry->load;
    }
    // A pinned adapter is brought up to host memory now, so its first request does not wait.
    PostOp([this, key = *key, pinned, load] {
      adapters_.SetPinned(key, pinned);
      if (load && !host_.Contains(key)) loader_->Request(key, load);
    });
    return absl::OkStatus();
  }

  std::vector<AdapterInfo> ListAdapters() const {
    std::vector<AdapterInfo> out;
    const std::vector<RegisteredAdapter> entries = registry_.List();
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    for (const RegisteredAdapter& entry : entries) out.push_back(Describe(entry));
    return out;
  }

  std::optional<AdapterInfo> FindAdapter(const std::string& id) const {
    std::optional<RegisteredAdapter> entry = registry_.Find(id);
    if (!entry) return std::nullopt;
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    return Describe(*entry);
  }

  // The listing of one registration; needs stats_mu_ (the residency snapshots).
  AdapterInfo Describe(const RegisteredAdapter& entry) const {
    AdapterInfo info = DescribeAdapter(entry);
    if (resident_snapshot_.count(entry.pool_key)) {
      info.state = AdapterInfo::State::kResident;
    } else if (host_.Contains(entry.pool_key)) {
      info.state = AdapterInfo::State::kHost;
    } else if (loader_->Pending(entry.pool_key)) {
      info.state = AdapterInfo::State::kLoading;
    } else {
      info.state = AdapterInfo::State::kStored;
    }
    auto inflight = in_flight_snapshot_.find(entry.pool_key);
    info.in_flight = inflight == in_flight_snapshot_.end() ? 0 : inflight->second;
    return info;
  }

  absl::Status SetMergeMode(MergeMode mode, const std::string& adapter_id) {
    if (mode == MergeMode::kForced && !registry_.Contains(adapter_id)) {
      return absl::NotFoundError(
          absl::StrCat("adapter_id: adapter '", adapter_id, "' is not loaded"));
    }
    PostOp([this, mode, adapter_id] {
      merge_mode_ = mode;
      forced_adapter_ = adapter_id;
    });
    return absl::OkStatus();
  }

  bool Drain(Clock::duration deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    draining_ = true;
    const bool done = idle_cv_.wait_for(lock, deadline, [this] { return in_flight_ == 0; });
    if (!done) {
      drain_cancel_all_ = true;
      cv_.notify_all();
      idle_cv_.wait_for(lock, std::chrono::seconds(10), [this] { return in_flight_ == 0; });
    }
    return done;
  }

  EngineStats Stats() const {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }

 private:
  void PostOp(std::function<void()> op) {
    std::lock_guard<std::mutex> lock(mu_);
    ops_.push_back(std::move(op));
    cv_.notify_all();
  }

  // Pool pages the request needs for its adapters and KV: RESOURCE_EXHAUSTED if the pool is
  // too small for it even when empty.
  absl::Status CheckFits(const GenerationRequest& request, const WeightedAdapters& adapters) const {
    int64_t adapter_pages = 0;
    for (const auto& [adapter, weight] : adapters) adapter_pages += adapters_.PagesNeeded(*adapter);
    const int64_t kv_pages = KvBlocksNeeded(request, layout_.block_size);
    if (adapter_pages + kv_pages > pages_.num_pages()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "request needs ", adapter_pages, " adapter pages and ", kv_pages,
          " KV blocks, the pool holds ", pages_.num_pages(), " pages (raise --pool-mb)"));
    }
    return absl::OkStatus();
  }

  void Loop();
  void Step();
  // A request whose adapters are all in memory goes to the scheduler; one still missing some
  // waits in awaiting_ with their loads queued (in arrival order).
  void Admit(std::unique_ptr<RequestState> r);
  void AwaitAdapters(std::unique_ptr<RequestState> r);
  void OnLoaded(const std::string& key,
                const absl::StatusOr<std::shared_ptr<const LoraAdapter>>& adapter, double seconds);
  void ExpireRequests(const std::set<uint64_t>& cancels, bool cancel_all, Clock::time_point now);
  void UpdateMerge(Clock::time_point now);
  void RunStep(const std::vector<ScheduledSequence>& sequences);
  void Finish(RequestState& r, FinishReason reason, absl::Status status = absl::OkStatus());
  void EmitToken(RequestState& r, SampledToken sampled);
  void DeliverCompletions();
  void PublishStats();

  // Owned by the step loop (no lock): everything from here to the mutexes.
  std::unique_ptr<LlamaModel> model_;
  EngineOptions options_;
  kernels::KvPageLayout layout_;
  std::unique_ptr<PoolStorage> memory_;
  PagePool pages_;
  AdapterPool adapters_;
  PoolResources resources_;
  Scheduler scheduler_;
  MergeController merge_;
  MergePolicy merge_policy_;
  std::vector<int32_t> eos_ids_;
  std::set<std::string> retired_keys_;  // unregistered, evicted once no request holds them
  MergeMode merge_mode_ = MergeMode::kAuto;
  std::string forced_adapter_;
  int64_t generated_tokens_ = 0;
  int64_t steps_ = 0;
  std::vector<std::pair<std::function<void(const RequestResult&)>, RequestResult>> completions_;
  std::vector<std::unique_ptr<RequestState>> awaiting_;  // waiting for the loader, in order
  int64_t host_loads_ = 0;
  int64_t host_load_failures_ = 0;
  CumulativeHistogram host_load_seconds_{LatencyBounds()};

  AdapterRegistry registry_;  // thread-safe on its own
  HostAdapterCache host_;     // thread-safe on its own

  mutable std::mutex mu_;  // guards incoming_, cancels_, ops_, flags and the counts below
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::vector<std::unique_ptr<RequestState>> incoming_;
  std::set<uint64_t> cancels_;
  std::vector<std::function<void()>> ops_;
  bool stopping_ = false;
  bool draining_ = false;
  bool drain_cancel_all_ = false;
  int waiting_count_ = 0;
  int in_flight_ = 0;  // submitted and not yet completed (Drain waits for zero)
  uint64_t next_id_ = 1;

  mutable std::mutex stats_mu_;  // guards stats_ and the snapshots below
  EngineStats stats_;
  std::set<std::string> resident_snapshot_;
  std::map<std::string, int> in_flight_snapshot_;

  // The step loop's OpenMP team size: fixed (options_.cpu_threads > 0) or following the free
  // cores (thread_budget_). Only the step loop touches it.
  std::unique_ptr<ThreadBudget> thread_budget_;
  std::thread thread_;
  // Last: destroyed first, so its thread is gone before anything its callback touches.
  std::unique_ptr<AdapterLoader> loader_;
};

void Engine::Impl::Loop() {
  // OpenMP's team size is per thread: set it on the step loop, which runs every forward pass.
  if (options_.cpu_threads > 0) {
    omp_set_num_threads(options_.cpu_threads);
  } else {
    thread_budget_ = std::make_unique<ThreadBudget>(omp_get_max_threads());
  }
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(100), [this] {
        return stopping_ || !incoming_.empty() || !cancels_.empty() || !ops_.empty() ||
               !scheduler_.idle();
      });
      if (stopping_) break;
    }
    Step();
  }
  scheduler_.RemoveIf([this](RequestState& r) {
    Finish(r, FinishReason::kCancelled);
    return true;
  });
  std::vector<std::unique_ptr<RequestState>> incoming;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(incoming_);
  }
  for (auto& r : incoming) Finish(*r, FinishReason::kCancelled);
  for (auto& r : awaiting_) Finish(*r, FinishReason::kCancelled);
  awaiting_.clear();
  DeliverCompletions();
}

void Engine::Impl::Admit(std::unique_ptr<RequestState> r) {
  if (absl::Status s = CheckFits(r->request, r->adapters); !s.ok()) {
    Finish(*r, FinishReason::kError, std::move(s));
    return;
  }
  scheduler_.Enqueue(std::move(r));
}

void Engine::Impl::AwaitAdapters(std::unique_ptr<RequestState> r) {
  // A load may have finished between Submit and now.
  std::erase_if(r->missing, [&](const RequestState::MissingAdapter& m) {
    std::shared_ptr<const LoraAdapter> adapter = host_.Peek(m.pool_key);
    if (adapter != nullptr) r->adapters[m.index].first = std::move(adapter);
    return r->adapters[m.index].first != nullptr;
  });
  if (r->missing.empty()) {
    Admit(std::move(r));
    return;
  }
  for (const RequestState::MissingAdapter& m : r->missing) loader_->Request(m.pool_key, m.load);
  awaiting_.push_back(std::move(r));
}

void Engine::Impl::OnLoaded(const std::string& key,
                            const absl::StatusOr<std::shared_ptr<const LoraAdapter>>& adapter,
                            double seconds) {
  const std::string id = IdOfPoolKey(key);
  if (adapter.ok()) {
    ++host_loads_;
    host_load_seconds_.Observe(seconds);
    // An adapter unloaded (or replaced) while it loaded serves the requests that were waiting
    // for it, which hold it, but is not cached under a registration that no longer exists.
    if (registry_.PoolKey(id) == key) host_.Insert(key, *adapter, /*reloadable=*/true);
  } else {
    ++host_load_failures_;
    if (options_.log_warning) {
      options_.log_warning(absl::StrCat("adapter '", id, "' could not be read from the store: ",
                                        adapter.status().ToString()));
    }
  }
  std::vector<std::unique_ptr<RequestState>> ready;
  std::erase_if(awaiting_, [&](std::unique_ptr<RequestState>& r) {
    for (auto m = r->missing.begin(); m != r->missing.end();) {
      if (m->pool_key != key) {
        ++m;
        continue;
      }
      if (!adapter.ok()) {
        Finish(*r, FinishReason::kError,
               absl::Status(adapter.status().code(),
                            absl::StrCat("adapters[", m->index, "].adapter_id: adapter '", id,
                                         "' could not be loaded: ", adapter.status().message())));
        return true;
      }
      r->adapters[m->index].first = *adapter;
      m = r->missing.erase(m);
    }
    if (!r->missing.empty()) return false;
    ready.push_back(std::move(r));
    return true;
  });
  for (auto& r : ready) Admit(std::move(r));
}

void Engine::Impl::Finish(RequestState& r, FinishReason reason, absl::Status status) {
  scheduler_.ReleaseResources(r);
  r.finished = true;
  RequestResult result = r.MakeResult(reason, std::move(status), Clock::now());
  // Delivered after the step publishes its stats, so a caller woken by on_finish already
  // sees the request's memory returned.
  completions_.emplace_back(std::move(r.callbacks.on_finish), std::move(result));
}

void Engine::Impl::DeliverCompletions() {
  std::vector<std::pair<std::function<void(const RequestResult&)>, RequestResult>> done;
  done.swap(completions_);
  for (auto& [callback, result] : done) {
    if (callback) callback(result);
  }
  if (!done.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_ -= static_cast<int>(done.size());
    if (in_flight_ == 0) idle_cv_.notify_all();
  }
}

void Engine::Impl::EmitToken(RequestState& r, SampledToken sampled) {
  ++generated_tokens_;
  const bool is_eos = std::find(eos_ids_.begin(), eos_ids_.end(), sampled.token) != eos_ids_.end();
  const std::optional<FinishReason> done = r.Append(sampled.token, is_eos, options_.tokenizer,
                                                    Clock::now(), std::move(sampled.logprobs));
  if (done) Finish(r, *done);
}

void Engine::Impl::ExpireRequests(const std::set<uint64_t>& cancels, bool cancel_all,
                                  Clock::time_point now) {
  // Resources go back before anything is scheduled; requests waiting for a load expire alike.
  auto expire = [&](RequestState& r) {
    if (cancel_all || cancels.count(r.id)) {
      Finish(r, FinishReason::kCancelled);
    } else if (r.request.deadline && now >= *r.request.deadline) {
      Finish(r, FinishReason::kDeadline);
    }
    return r.finished;
  };
  scheduler_.RemoveIf(expire);
  std::erase_if(awaiting_, [&](std::unique_ptr<RequestState>& r) { return expire(*r); });
  if (retired_keys_.empty()) return;
  // A retired key stays retired while any request still names it: one waiting for its load or
  // for its turn acquires the pool copy later, and that copy must go once it finishes.
  std::set<std::string> named;
  auto name = [&](const RequestState& r) { named.insert(r.pool_keys.begin(), r.pool_keys.end()); };
  for (const auto& r : scheduler_.running()) name(*r);
  for (const auto& r : scheduler_.waiting()) name(*r);
  for (const auto& r : awaiting_) name(*r);
  for (auto it = retired_keys_.begin(); it != retired_keys_.end();) {
    if (adapters_.RefCount(*it) == 0 && !named.contains(*it)) {
      adapters_.EvictIfUnused(*it);
      it = retired_keys_.erase(it);
    } else {
      ++it;
    }
  }
}

void Engine::Impl::UpdateMerge(Clock::time_point now) {
  // Merge candidate: one single adapter at weight 1 across everything active.
  std::optional<std::string> single;
  bool mixed = false;
  std::shared_ptr<const LoraAdapter> single_adapter;
  auto consider = [&](const RequestState& r) {
    if (r.adapters.size() != 1 || r.adapters[0].second != 1.0f) {
      mixed = true;
      return;
    }
    if (single && *single != r.pool_keys[0]) mixed = true;
    single = r.pool_keys[0];
    single_adapter = r.adapters[0].first;
  };
  for (const auto& r : scheduler_.running()) consider(*r);
  for (const auto& r : scheduler_.waiting()) consider(*r);
  if (mixed) single.reset();
  std::string forced_key;
  if (merge_mode_ == MergeMode::kForced) {
    forced_key = registry_.PoolKey(forced_adapter_).value_or("");
  }
  const std::string target = merge_policy_.Decide(
      merge_mode_, forced_key, single, scheduler_.idle(),
      std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(options_.merge_window_seconds)),
      merge_.merged_id());
  if (target == merge_.merged_id()) return;
  absl::Status status = merge_.Unmerge();
  if (status.ok() && !target.empty() && single_adapter) {
    status = merge_.Merge(single_adapter, target);
  }
  // A failed merge leaves the pristine weights: requests still run, on the LoRA kernels.
  (void)status;
}

void Engine::Impl::Step() {
  std::vector<std::unique_ptr<RequestState>> incoming;
  std::set<uint64_t> cancels;
  std::vector<std::function<void()>> ops;
  bool cancel_all = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(incoming_);
    cancels.swap(cancels_);
    ops.swap(ops_);
    cancel_all = drain_cancel_all_;
  }
  for (auto& op : ops) op();
  for (auto& r : incoming) {
    if (r->missing.empty()) {
      scheduler_.Enqueue(std::move(r));
    } else {
      AwaitAdapters(std::move(r));
    }
  }
  const auto now = Clock::now();
  merge_policy_.Tick(merge_.merged());
  ExpireRequests(cancels, cancel_all, now);
  UpdateMerge(now);
  if (!scheduler_.idle()) {
    StepBatch batch = scheduler_.Schedule(now);
    if (!batch.sequences.empty()) RunStep(batch.sequences);
    scheduler_.RemoveIf([](RequestState& r) { return r.finished; });
  }
  PublishStats();
  DeliverCompletions();
}

void Engine::Impl::RunStep(const std::vector<ScheduledSequence>& sequences) {
  auto step = BuildStepPlan(sequences, merge_.merged() ? merge_.merged_id() : "",
                            model_->config().num_layers);
  std::vector<float> logits;
  absl::Status status = step.status();
  if (status.ok()) {
    logits.resize(step->plan.logit_rows.size() * model_->config().vocab_size);
    if (thread_budget_ != nullptr) thread_budget_->Update(ThreadBudget::Clock::now());
    status = model_->Forward(step->plan, *memory_, *memory_, layout_, logits.data());
    ++steps_;
    for (const auto& [r, chunk] : sequences) r->num_computed += chunk;
  }
  if (!status.ok()) {
    for (const auto& [r, chunk] : sequences) Finish(*r, FinishReason::kError, status);
    return;
  }
  const int vocab = model_->config().vocab_size;
  for (auto& [r, row] : step->sampled) {
    EmitToken(*r, r->SampleNext(std::span<float>(&logits[static_cast<size_t>(row) * vocab], vocab),
                                eos_ids_));
  }
}

void Engine::Impl::PublishStats() {
  const AdapterPoolStats pool = adapters_.stats();
  std::map<std::string, int> in_flight;
  std::set<std::string> running_ids, waiting_ids;
  int64_t kv_pages = 0;
  auto count = [&](const RequestState& r, std::set<std::string>& ids) {
    kv_pages += static_cast<int64_t>(r.pages.size());
    for (size_t i = 0; i < r.adapters.size(); ++i) {
      ++in_flight[r.pool_keys[i]];
      ids.insert(r.adapters[i].first->id);
    }
  };
  for (const auto& r : scheduler_.running()) count(*r, running_ids);
  for (const auto& r : scheduler_.waiting()) count(*r, waiting_ids);
  for (const auto& r : awaiting_) {
    for (size_t i = 0; i < r->adapters.size(); ++i) {
      ++in_flight[r->pool_keys[i]];
      waiting_ids.insert(IdOfPoolKey(r->pool_keys[i]));
    }
  }
  const std::vector<double> load_seconds = resources_.TakeLoadSeconds();
  const HostCacheStats host = host_.stats();
  const int64_t page_bytes = static_cast<int64_t>(layout_.page_floats() * sizeof(float));
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    EngineStats& s = stats_;
    s.waiting = static_cast<int>(scheduler_.waiting().size() + awaiting_.size());
    s.running = static_cast<int>(scheduler_.running().size());
    s.pool_pages_total = pages_.num_pages();
    s.kv_pages_used = kv_pages;
    s.adapter_pages_used = pool.pages_used;
    s.kv_usage = static_cast<double>(kv_pages) / std::max(1, pages_.num_pages());
    s.adapters_resident = pool.resident;
    s.adapter_loads = pool.loads;
    s.adapter_evictions = pool.evictions;
    s.adapter_hits = pool.hits;
    s.adapter_misses = pool.misses;
    s.preemptions = scheduler_.preemptions();
    s.generated_tokens = generated_tokens_;
    s.steps = steps_;
    s.merge_mode = merge_mode_;
    s.merged_adapter = merge_.merged_adapter_id();
    s.merge_switches = merge_.switches();
    s.seconds_merged = merge_policy_.seconds_merged();
    s.seconds_unmerged = merge_policy_.seconds_unmerged();
    s.running_adapters.assign(running_ids.begin(), running_ids.end());
    s.waiting_adapters.assign(waiting_ids.begin(), waiting_ids.end());
    for (double seconds : load_seconds) s.adapter_load_seconds.Observe(seconds);
    s.kv_block_size = layout_.block_size;
    s.adapters_host = host.entries;
    s.host_bytes_used = host.bytes_used;
    s.host_budget_bytes = host.budget_bytes;
    s.host_hits = host.hits;
    s.host_misses = host.misses;
    s.host_loads = host_loads_;
    s.host_load_failures = host_load_failures_;
    s.host_evictions = host.evictions;
    s.requests_waiting_for_adapter = static_cast<int>(awaiting_.size());
    s.adapter_pool_bytes_used = pool.pages_used * page_bytes;
    s.pool_bytes_total = static_cast<int64_t>(pages_.num_pages()) * page_bytes;
    s.host_load_seconds = host_load_seconds_;
    const std::vector<std::string> keys = adapters_.ResidentKeys();
    resident_snapshot_ = std::set<std::string>(keys.begin(), keys.end());
    // Pool keys are "<id>#<registration>"; a retired registration (unloaded, or replaced under
    // the same id) is not the adapter a request for that id would get.
    std::set<std::string> resident_ids;
    for (const std::string& key : keys) {
      const std::string id = IdOfPoolKey(key);
      if (registry_.PoolKey(id) == key) resident_ids.insert(id);
    }
    s.resident_adapters.assign(resident_ids.begin(), resident_ids.end());
    s.pending_adapters.clear();
    for (const std::set<std::string>* ids : {&running_ids, &waiting_ids}) {
      for (const std::string& id : *ids) {
        if (!resident_ids.contains(id)) s.pending_adapters.push_back(id);
      }
    }
    in_flight_snapshot_ = std::move(in_flight);
  }
  std::lock_guard<std::mutex> lock(mu_);
  waiting_count_ = static_cast<int>(scheduler_.waiting().size() + awaiting_.size());
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<LlamaModel> model,
                                                      EngineOptions options) {
  if (options.kv_block_size < 1 || options.max_batch_tokens < 1 || options.max_running < 1) {
    return absl::InvalidArgumentError(
        "engine options: kv_block_size, max_batch_tokens and max_running must be positive");
  }
  const kernels::KvPageLayout layout = model->KvLayout(options.kv_block_size);
  auto memory = model->backend().CreatePool(layout.page_floats(), PoolPages(options, layout));
  if (!memory.ok()) return memory.status();
  return std::unique_ptr<Engine>(new Engine(std::make_unique<Impl>(
      std::move(model), std::move(options), std::move(*memory), layout)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;
const ModelConfig& Engine::model_config() const { return impl_->config(); }
absl::StatusOr<uint64_t> Engine::Submit(GenerationRequest request, RequestCallbacks callbacks) {
  return impl_->Submit(std::move(request), std::move(callbacks));
}
void Engine::Cancel(uint64_t id) { impl_->Cancel(id); }
absl::Status Engine::RegisterAdapter(std::shared_ptr<const LoraAdapter> adapter,
                                     AdapterLoadFn reload) {
  return impl_->RegisterAdapter(std::move(adapter), std::move(reload));
}
absl::Status Engine::RegisterStoredAdapter(AdapterSummary summary, AdapterLoadFn load) {
  return impl_->RegisterStoredAdapter(std::move(summary), std::move(load));
}
absl::StatusOr<std::shared_ptr<const LoraAdapter>> Engine::GetAdapter(const std::string& id) {
  return impl_->GetAdapter(id);
}
absl::Status Engine::UnregisterAdapter(const std::string& id) {
  return impl_->UnregisterAdapter(id);
}
absl::Status Engine::PinAdapter(const std::string& id, bool pinned) {
  return impl_->PinAdapter(id, pinned);
}
std::vector<AdapterInfo> Engine::ListAdapters() const { return impl_->ListAdapters(); }
std::optional<AdapterInfo> Engine::FindAdapter(const std::string& id) const {
  return impl_->FindAdapter(id);
}
absl::Status Engine::SetMergeMode(MergeMode mode, const std::string& adapter_id) {
  return impl_->SetMergeMode(mode, adapter_id);
}
bool Engine::Drain(std::chrono::steady_clock::duration deadline) { return impl_->Drain(deadline); }
EngineStats Engine::Stats() const { return impl_->Stats(); }

}  // namespace loraserve
