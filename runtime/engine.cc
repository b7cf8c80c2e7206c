// The step loop. Each iteration: take new requests, cancels and admin ops (under mu_, briefly);
// decide merge/unmerge; schedule (running requests first, oldest first, then FIFO admission,
// all within the token budget, preempting the youngest on KV pressure); run ONE forward pass
// with no lock held; sample and stream; free whatever finished. See docs/scheduling.md.
#include "runtime/engine.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/adapter_pool.h"
#include "runtime/adapter_set.h"
#include "runtime/merge_controller.h"
#include "runtime/page_pool.h"
#include "runtime/request_state.h"
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

struct RegisteredAdapter {
  std::shared_ptr<const LoraAdapter> adapter;
  std::string pool_key;  // unique per registration
  std::chrono::system_clock::time_point last_used;
};

class Engine::Impl {
 public:
  Impl(std::unique_ptr<LlamaModel> model, EngineOptions options)
      : model_(std::move(model)),
        options_(std::move(options)),
        layout_(model_->KvLayout(options_.kv_block_size)),
        pages_(layout_.page_floats(), NumPages()),
        merge_(model_.get()),
        pool_(&pages_, model_->config(),
              [this](int layer, Module module) -> const std::vector<float>& {
                return merge_.PristineWeight(layer, module);
              },
              options_.adapter_storage) {
    eos_ids_ = model_->config().eos_token_ids;
    if (options_.tokenizer != nullptr) {
      for (int32_t id : options_.tokenizer->eos_ids()) eos_ids_.push_back(id);
    }
    merge_mode_ = options_.merge_mode;
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

  int32_t NumPages() const {
    if (options_.pool_pages > 0) return static_cast<int32_t>(options_.pool_pages);
    return static_cast<int32_t>(std::max<int64_t>(
        8, options_.pool_bytes / static_cast<int64_t>(layout_.page_floats() * sizeof(float))));
  }

  const ModelConfig& config() const { return model_->config(); }

  absl::StatusOr<uint64_t> Submit(GenerationRequest request, RequestCallbacks callbacks) {
    const ModelConfig& c = model_->config();
    if (request.prompt_ids.empty()) {
      return absl::InvalidArgumentError("prompt: must contain at least one token");
    }
    for (size_t i = 0; i < request.prompt_ids.size(); ++i) {
      if (request.prompt_ids[i] < 0 || request.prompt_ids[i] >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("prompt_ids[", i, "]: ",
                                                       request.prompt_ids[i],
                                                       " is outside the vocabulary"));
      }
    }
    if (request.max_tokens < 1) {
      return absl::InvalidArgumentError("max_tokens: must be at least 1");
    }
    if (auto s = request.sampling.Validate(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("sampling.", s.message()));
    }
    const int64_t context = static_cast<int64_t>(request.prompt_ids.size()) + request.max_tokens;
    if (context > c.max_position_embeddings) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "prompt (", request.prompt_ids.size(), " tokens) + max_tokens (", request.max_tokens,
          ") exceeds the model context of ", c.max_position_embeddings, " tokens"));
    }
    const int64_t pages_needed = (context + layout_.block_size - 1) / layout_.block_size;
    if (pages_needed > pages_.num_pages()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "request needs ", pages_needed, " KV blocks, the pool holds ", pages_.num_pages()));
    }
    if (!request.stop_strings.empty() && options_.tokenizer == nullptr) {
      return absl::InvalidArgumentError("stop: stop strings need a tokenizer");
    }
    auto state = std::make_unique<RequestState>();
    {
      std::lock_guard<std::mutex> lock(registry_mu_);
      for (size_t i = 0; i < request.adapters.size(); ++i) {
        auto it = registry_.find(request.adapters[i].id);
        if (it == registry_.end()) {
          return absl::NotFoundError(absl::StrCat("adapters[", i, "].adapter_id: adapter '",
                                                  request.adapters[i].id, "' is not loaded"));
        }
        state->adapters.emplace_back(it->second.adapter, request.adapters[i].weight);
        state->pool_keys.push_back(it->second.pool_key);
        it->second.last_used = std::chrono::system_clock::now();
      }
    }
    if (auto s = ValidateAdapterSet(state->adapters); !s.ok()) return s;
    int64_t adapter_pages = 0;
    for (const auto& [adapter, weight] : state->adapters) adapter_pages += pool_.PagesNeeded(*adapter);
    if (adapter_pages + pages_needed > pages_.num_pages()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "request needs ", adapter_pages, " adapter pages and ", pages_needed,
          " KV blocks, the pool holds ", pages_.num_pages(), " pages (raise --pool-mb)"));
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

  absl::Status RegisterAdapter(std::shared_ptr<const LoraAdapter> adapter) {
    if (adapter->num_layers != model_->config().num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter '", adapter->id, "' was built for a different base model"));
    }
    std::lock_guard<std::mutex> lock(registry_mu_);
    if (registry_.count(adapter->id)) {
      return absl::AlreadyExistsError(absl::StrCat("adapter '", adapter->id, "' is already loaded"));
    }
    RegisteredAdapter entry;
    entry.pool_key = absl::StrCat(adapter->id, "#", next_registration_++);
    entry.last_used = std::chrono::system_clock::now();
    entry.adapter = std::move(adapter);
    registry_[entry.adapter->id] = std::move(entry);
    return absl::OkStatus();
  }

  absl::Status UnregisterAdapter(const std::string& id) {
    std::string key;
    {
      std::lock_guard<std::mutex> lock(registry_mu_);
      auto it = registry_.find(id);
      if (it == registry_.end()) {
        return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not loaded"));
      }
      key = it->second.pool_key;
      registry_.erase(it);
    }
    PostOp([this, key] { retired_keys_.insert(key); });
    return absl::OkStatus();
  }

  absl::Status PinAdapter(const std::string& id, bool pinned) {
    std::string key;
    {
      std::lock_guard<std::mutex> lock(registry_mu_);
      auto it = registry_.find(id);
      if (it == registry_.end()) {
        return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not loaded"));
      }
      key = it->second.pool_key;
    }
    PostOp([this, key, pinned] { pool_.SetPinned(key, pinned); });
    std::lock_guard<std::mutex> lock(stats_mu_);
    pinned_snapshot_[id] = pinned;
    return absl::OkStatus();
  }

  std::vector<AdapterInfo> ListAdapters() const {
    std::vector<AdapterInfo> out;
    std::lock_guard<std::mutex> lock(registry_mu_);
    std::lock_guard<std::mutex> stats_lock(stats_mu_);
    for (const auto& [id, entry] : registry_) {
      AdapterInfo info;
      info.id = id;
      info.state = resident_snapshot_.count(entry.pool_key) ? AdapterInfo::State::kResident
                                                            : AdapterInfo::State::kHost;
      auto pin = pinned_snapshot_.find(id);
      info.pinned = pin != pinned_snapshot_.end() && pin->second;
      info.max_rank = entry.adapter->max_rank;
      info.alpha = entry.adapter->config.lora_alpha;
      for (int m = 0; m < kNumModules; ++m) {
        for (const auto& layer : entry.adapter->modules) {
          if (layer[m]) {
            info.target_modules.push_back(kModuleNames[m]);
            break;
          }
        }
      }
      info.bytes = entry.adapter->weight_bytes;
      auto inflight = in_flight_snapshot_.find(entry.pool_key);
      info.in_flight = inflight == in_flight_snapshot_.end() ? 0 : inflight->second;
      info.last_used = entry.last_used;
      out.push_back(std::move(info));
    }
    return out;
  }

  absl::Status SetMergeMode(MergeMode mode, const std::string& adapter_id) {
    if (mode == MergeMode::kForced) {
      std::lock_guard<std::mutex> lock(registry_mu_);
      if (!registry_.count(adapter_id)) {
        return absl::NotFoundError(absl::StrCat("adapter_id: adapter '", adapter_id,
                                                "' is not loaded"));
      }
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

  void Loop();
  void Step();
  void Finish(RequestState& r, FinishReason reason, absl::Status status = absl::OkStatus());
  void FreeResources(RequestState& r);
  bool EnsurePages(RequestState& r, int upto_tokens);
  void Preempt(RequestState& r);
  bool AcquireAdapters(RequestState& r);
  void EmitToken(RequestState& r, int32_t token);
  void PublishStats();
  void DeliverCompletions();

  std::unique_ptr<LlamaModel> model_;
  EngineOptions options_;
  kernels::KvPageLayout layout_;
  std::vector<int32_t> eos_ids_;

  // Step-loop state (touched only by thread_).
  PagePool pages_;
  MergeController merge_;
  AdapterPool pool_;
  std::deque<std::unique_ptr<RequestState>> waiting_;
  std::vector<std::unique_ptr<RequestState>> running_;  // admission order (oldest first)
  std::set<std::string> retired_keys_;
  MergeMode merge_mode_ = MergeMode::kAuto;
  std::string forced_adapter_;
  int64_t preemptions_ = 0;
  int64_t generated_tokens_ = 0;
  int64_t steps_ = 0;
  std::vector<double> load_seconds_;
  std::vector<std::pair<std::function<void(const RequestResult&)>, RequestResult>> completions_;

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
  int running_count_ = 0;
  int in_flight_ = 0;  // submitted and not yet completed (Drain waits for zero)
  uint64_t next_id_ = 1;

  mutable std::mutex registry_mu_;  // guards registry_ and next_registration_
  std::map<std::string, RegisteredAdapter> registry_;
  uint64_t next_registration_ = 1;

  mutable std::mutex stats_mu_;  // guards the snapshots below
  EngineStats stats_;
  std::set<std::string> resident_snapshot_;
  std::map<std::string, int> in_flight_snapshot_;
  std::map<std::string, bool> pinned_snapshot_;

  std::thread thread_;
};

void Engine::Impl::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(100), [this] {
        return stopping_ || !incoming_.empty() || !cancels_.empty() || !ops_.empty() ||
               !running_.empty() || !waiting_.empty();
      });
      if (stopping_) break;
    }
    Step();
  }
  for (auto& r : running_) Finish(*r, FinishReason::kCancelled);
  for (auto& r : waiting_) Finish(*r, FinishReason::kCancelled);
  std::vector<std::unique_ptr<RequestState>> incoming;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(incoming_);
  }
  for (auto& r : incoming) Finish(*r, FinishReason::kCancelled);
  DeliverCompletions();
}

void Engine::Impl::FreeResources(RequestState& r) {
  if (!r.pages.empty()) {
    pages_.Free(r.pages);
    r.pages.clear();
  }
  if (r.adapters_acquired) {
    for (const std::string& key : r.pool_keys) pool_.Release(key);
    r.adapters_acquired = false;
    r.resident.clear();
  }
  r.num_computed = 0;
}

void Engine::Impl::Finish(RequestState& r, FinishReason reason, absl::Status status) {
  FreeResources(r);
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

bool Engine::Impl::AcquireAdapters(RequestState& r) {
  if (r.adapters_acquired) return true;
  std::vector<const ResidentLora*> resident;
  for (size_t i = 0; i < r.adapters.size(); ++i) {
    double seconds = 0;
    if (!pool_.IsResident(r.pool_keys[i])) {
      while (pool_.stats().resident >= options_.max_adapters_resident && pool_.EvictOne()) {
      }
    }
    auto view = pool_.Acquire(r.pool_keys[i], r.adapters[i].first, &seconds);
    if (!view.ok()) {
      for (size_t j = 0; j < i; ++j) pool_.Release(r.pool_keys[j]);
      return false;
    }
    if (seconds > 0) load_seconds_.push_back(seconds);
    resident.push_back(*view);
  }
  r.resident = std::move(resident);
  r.adapters_acquired = true;
  return true;
}

void Engine::Impl::Preempt(RequestState& r) {
  FreeResources(r);
  ++preemptions_;
}

bool Engine::Impl::EnsurePages(RequestState& r, int upto_tokens) {
  const int needed = (upto_tokens + layout_.block_size - 1) / layout_.block_size;
  while (static_cast<int>(r.pages.size()) < needed) {
    const int missing = needed - static_cast<int>(r.pages.size());
    while (pages_.free_pages() < missing && pool_.EvictOne()) {
    }
    auto pages = pages_.Allocate(std::min(missing, pages_.free_pages()));
    if (!pages || pages->empty()) return false;
    r.pages.insert(r.pages.end(), pages->begin(), pages->end());
  }
  return true;
}

void Engine::Impl::EmitToken(RequestState& r, int32_t token) {
  ++generated_tokens_;
  const bool is_eos = std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end();
  const std::optional<FinishReason> done =
      r.Append(token, is_eos, options_.tokenizer, Clock::now());
  if (done) Finish(r, *done);
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
  for (auto& r : incoming) waiting_.push_back(std::move(r));
  const auto now = Clock::now();
  merge_.Tick(now);

  // Cancels and deadlines: resources go back before anything is scheduled.
  auto expire = [&](std::unique_ptr<RequestState>& r) {
    if (cancel_all || cancels.count(r->id)) {
      Finish(*r, FinishReason::kCancelled);
    } else if (r->request.deadline && now >= *r->request.deadline) {
      Finish(*r, FinishReason::kDeadline);
    }
    return r->finished;
  };
  std::erase_if(running_, expire);
  std::erase_if(waiting_, expire);
  for (auto it = retired_keys_.begin(); it != retired_keys_.end();) {
    if (pool_.RefCount(*it) == 0) {
      pool_.EvictIfUnused(*it);
      it = retired_keys_.erase(it);
    } else {
      ++it;
    }
  }

  // Merge decision: one single adapter at weight 1 across everything active.
  std::optional<std::string> single;
  bool mixed = false;
  std::shared_ptr<const LoraAdapter> single_adapter;
  std::string single_key;
  auto consider = [&](const RequestState& r) {
    if (r.adapters.size() != 1 || r.adapters[0].second != 1.0f) {
      mixed = true;
      return;
    }
    if (single && *single != r.pool_keys[0]) mixed = true;
    single = r.pool_keys[0];
    single_adapter = r.adapters[0].first;
  };
  for (const auto& r : running_) consider(*r);
  for (const auto& r : waiting_) consider(*r);
  if (mixed) single.reset();
  std::string forced_key;
  if (merge_mode_ == MergeMode::kForced) {
    std::lock_guard<std::mutex> lock(registry_mu_);
    auto it = registry_.find(forced_adapter_);
    if (it != registry_.end()) forced_key = it->second.pool_key;
  }
  const bool idle = running_.empty() && waiting_.empty();
  const std::string target =
      merge_.Decide(merge_mode_, forced_key, single, idle, now,
                    std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(options_.merge_window_seconds)));
  if (target != merge_.merged_id()) {
    merge_.Unmerge();
    if (!target.empty() && single_adapter) merge_.Merge(single_adapter, target);
    merge_.Tick(now);
  }
  if (idle) {
    PublishStats();
    DeliverCompletions();
    return;
  }

  // Schedule: running first (oldest first), then FIFO admission, within the token budget.
  int budget = options_.max_batch_tokens;
  std::vector<std::pair<RequestState*, int>> batch;  // request, tokens this step
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    RequestState& r = *running_[i];
    const int chunk = std::min(r.pending_tokens(), budget);
    while (!EnsurePages(r, r.num_computed + chunk)) {
      // Preempt the youngest running request (recompute later); never an older one.
      RequestState& victim = *running_.back();
      Preempt(victim);
      waiting_.push_front(std::move(running_.back()));
      running_.pop_back();
      if (&victim == &r) break;
    }
    if (i >= running_.size()) break;
    if (r.pages.empty()) continue;
    batch.emplace_back(&r, chunk);
    budget -= chunk;
  }
  while (!waiting_.empty() && budget > 0 &&
         static_cast<int>(running_.size()) < options_.max_running) {
    RequestState& r = *waiting_.front();
    if (!AcquireAdapters(r)) break;
    const int chunk = std::min(r.pending_tokens(), budget);
    if (!EnsurePages(r, r.num_computed + chunk)) {
      FreeResources(r);
      break;
    }
    if (!r.first_scheduled) r.first_scheduled = now;
    batch.emplace_back(&r, chunk);
    budget -= chunk;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }

  // Build the plan; sequences sharing an adapter set sit next to each other.
  std::stable_sort(batch.begin(), batch.end(), [](const auto& a, const auto& b) {
    return a.first->set_key < b.first->set_key;
  });
  BatchPlan plan;
  plan.adapter_pool = pages_.data();
  std::map<std::string, int> set_index;
  std::vector<std::pair<RequestState*, int>> sampled;  // request, logit row index
  for (auto& [r, chunk] : batch) {
    SequencePlan seq;
    seq.token_begin = plan.num_tokens();
    for (int i = 0; i < chunk; ++i) {
      plan.token_ids.push_back(r->tokens[r->num_computed + i]);
      plan.positions.push_back(r->num_computed + i);
    }
    seq.token_end = plan.num_tokens();
    seq.block_table = r->pages;
    const bool merged_here = merge_.merged() && r->pool_keys.size() == 1 &&
                             r->pool_keys[0] == merge_.merged_id() && r->adapters[0].second == 1.0f;
    if (!r->adapters.empty() && !merged_here) {
      auto [it, inserted] = set_index.emplace(r->set_key, static_cast<int>(plan.adapter_sets.size()));
      if (inserted) {
        AdapterSetView view;
        for (size_t i = 0; i < r->resident.size(); ++i) {
          view.emplace_back(r->resident[i], r->adapters[i].second);
        }
        plan.adapter_sets.push_back(std::move(view));
      }
      seq.adapter_set = it->second;
    }
    if (r->num_computed + chunk == static_cast<int>(r->tokens.size())) {
      sampled.emplace_back(r, static_cast<int>(plan.logit_rows.size()));
      plan.logit_rows.push_back(seq.token_end - 1);
    }
    plan.seqs.push_back(std::move(seq));
  }
  if (!batch.empty()) {
    std::vector<float> logits(plan.logit_rows.size() * model_->config().vocab_size);
    absl::Status status = model_->Forward(plan, pages_.data(), layout_, logits.data());
    ++steps_;
    for (auto& [r, chunk] : batch) r->num_computed += chunk;
    if (!status.ok()) {
      for (auto& [r, chunk] : batch) Finish(*r, FinishReason::kError, status);
    } else {
      const int vocab = model_->config().vocab_size;
      for (auto& [r, row] : sampled) {
        const int32_t token = r->sampler->Sample(
            std::span<const float>(&logits[static_cast<size_t>(row) * vocab], vocab));
        EmitToken(*r, token);
      }
    }
  }
  std::erase_if(running_, [](const auto& r) { return r->finished; });
  PublishStats();
  DeliverCompletions();
}

void Engine::Impl::PublishStats() {
  const AdapterPoolStats pool = pool_.stats();
  std::set<std::string> resident;
  std::map<std::string, int> in_flight;
  std::set<std::string> running_ids, waiting_ids;
  int64_t kv_pages = 0;
  for (const auto& r : running_) {
    kv_pages += static_cast<int64_t>(r->pages.size());
    for (size_t i = 0; i < r->adapters.size(); ++i) {
      ++in_flight[r->pool_keys[i]];
      running_ids.insert(r->adapters[i].first->id);
    }
  }
  for (const auto& r : waiting_) {
    kv_pages += static_cast<int64_t>(r->pages.size());
    for (size_t i = 0; i < r->adapters.size(); ++i) {
      ++in_flight[r->pool_keys[i]];
      waiting_ids.insert(r->adapters[i].first->id);
    }
  }
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    EngineStats& s = stats_;
    s.waiting = static_cast<int>(waiting_.size());
    s.running = static_cast<int>(running_.size());
    s.pool_pages_total = pages_.num_pages();
    s.kv_pages_used = kv_pages;
    s.adapter_pages_used = pool.pages_used;
    s.kv_usage = static_cast<double>(kv_pages) / std::max(1, pages_.num_pages());
    s.adapters_resident = pool.resident;
    s.adapter_loads = pool.loads;
    s.adapter_evictions = pool.evictions;
    s.adapter_hits = pool.hits;
    s.adapter_misses = pool.misses;
    s.preemptions = preemptions_;
    s.generated_tokens = generated_tokens_;
    s.steps = steps_;
    s.merge_mode = merge_mode_;
    s.merged_adapter = merge_.merged_adapter_id();
    s.merge_switches = merge_.switches();
    s.seconds_merged = merge_.seconds_merged();
    s.seconds_unmerged = merge_.seconds_unmerged();
    s.running_adapters.assign(running_ids.begin(), running_ids.end());
    s.waiting_adapters.assign(waiting_ids.begin(), waiting_ids.end());
    for (double seconds : load_seconds_) s.adapter_load_seconds.Observe(seconds);
    load_seconds_.clear();
    const std::vector<std::string> keys = pool_.ResidentKeys();
    resident_snapshot_ = std::set<std::string>(keys.begin(), keys.end());
    in_flight_snapshot_ = std::move(in_flight);
  }
  std::lock_guard<std::mutex> lock(mu_);
  waiting_count_ = static_cast<int>(waiting_.size());
  running_count_ = static_cast<int>(running_.size());
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<LlamaModel> model,
                                                      EngineOptions options) {
  if (options.kv_block_size < 1 || options.max_batch_tokens < 1 || options.max_running < 1) {
    return absl::InvalidArgumentError(
        "engine options: kv_block_size, max_batch_tokens and max_running must be positive");
  }
  return std::unique_ptr<Engine>(
      new Engine(std::make_unique<Impl>(std::move(model), std::move(options))));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;
const ModelConfig& Engine::model_config() const { return impl_->config(); }
absl::StatusOr<uint64_t> Engine::Submit(GenerationRequest request, RequestCallbacks callbacks) {
  return impl_->Submit(std::move(request), std::move(callbacks));
}
void Engine::Cancel(uint64_t id) { impl_->Cancel(id); }
absl::Status Engine::RegisterAdapter(std::shared_ptr<const LoraAdapter> adapter) {
  return impl_->RegisterAdapter(std::move(adapter));
}
absl::Status Engine::UnregisterAdapter(const std::string& id) { return impl_->UnregisterAdapter(id); }
absl::Status Engine::PinAdapter(const std::string& id, bool pinned) {
  return impl_->PinAdapter(id, pinned);
}
std::vector<AdapterInfo> Engine::ListAdapters() const { return impl_->ListAdapters(); }
absl::Status Engine::SetMergeMode(MergeMode mode, const std::string& adapter_id) {
  return impl_->SetMergeMode(mode, adapter_id);
}
bool Engine::Drain(std::chrono::steady_clock::duration deadline) { return impl_->Drain(deadline); }
EngineStats Engine::Stats() const { return impl_->Stats(); }

}  // namespace loraserve
