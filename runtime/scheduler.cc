#include "runtime/scheduler.h"

#include <algorithm>

namespace loraserve {

void Scheduler::Enqueue(std::unique_ptr<RequestState> request) {
  waiting_.push_back(std::move(request));
}

void Scheduler::ReleaseResources(RequestState& r) {
  kv_->Free(r);
  adapters_->Release(r);
  r.num_computed = 0;
}

void Scheduler::Preempt(RequestState& r) {
  ReleaseResources(r);
  ++preemptions_;
}

StepBatch Scheduler::Schedule(Clock::time_point now) {
  StepBatch batch;
  int budget = options_.max_batch_tokens;
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    RequestState& r = *running_[i];
    const int chunk = std::min(r.pending_tokens(), budget);
    bool preempted_self = false;
    while (!kv_->Ensure(r, r.num_computed + chunk)) {
      // Preempt the youngest running request (recomputed later); never an older one.
      RequestState& victim = *running_.back();
      Preempt(victim);
      batch.preempted.push_back(&victim);
      waiting_.push_front(std::move(running_.back()));
      running_.pop_back();
      if (&victim == &r) {
        preempted_self = true;
        break;
      }
    }
    if (preempted_self) break;
    batch.sequences.push_back({&r, chunk});
    budget -= chunk;
  }
  if (!batch.preempted.empty()) return batch;
  while (!waiting_.empty() && budget > 0 &&
         static_cast<int>(running_.size()) < options_.max_running) {
    RequestState& r = *waiting_.front();
    if (!adapters_->Acquire(r)) break;
    const int chunk = std::min(r.pending_tokens(), budget);
    if (!kv_->Ensure(r, r.num_computed + chunk)) {
      ReleaseResources(r);
      break;
    }
    if (!r.first_scheduled) r.first_scheduled = now;
    batch.sequences.push_back({&r, chunk});
    budget -= chunk;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  return batch;
}

}  // namespace loraserve
