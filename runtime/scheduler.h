// Continuous batching as a plain class: no threads, no model, no memory of its own. Each step
// it turns the token budget into the step's batch: running requests first (oldest first, with
// chunked prefill), preempting the youngest running request when KV memory runs out, then FIFO
// admission of waiting requests whose adapters can be made resident, and no admission at all in
// a step that preempted (the freed memory goes to the requests already running).
// Memory comes through two interfaces so tests drive it with fakes. See docs/scheduling.md.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <vector>

#include "runtime/request_state.h"

namespace loraserve {

// KV pages of a request.
class KvAllocator {
 public:
  virtual ~KvAllocator() = default;
  // Grows r's block table to cover `tokens` positions (evicting idle adapters first if it must);
  // false when memory is short, with whatever pages it got kept.
  virtual bool Ensure(RequestState& r, int tokens) = 0;
  // Returns every KV page of r.
  virtual void Free(RequestState& r) = 0;
};

// Adapter references of a request.
class AdapterResidency {
 public:
  virtual ~AdapterResidency() = default;
  // Makes r's adapters resident and references them; false means r must wait (no partial
  // references are kept). A no-op returning true when r already holds them.
  virtual bool Acquire(RequestState& r) = 0;
  virtual void Release(RequestState& r) = 0;
};

struct SchedulerOptions {
  int max_batch_tokens = 512;
  int max_running = 64;
};

struct ScheduledSequence {
  RequestState* request = nullptr;
  int tokens = 0;  // rows this step: a prefill chunk, or 1 for decode
};

struct StepBatch {
  std::vector<ScheduledSequence> sequences;  // running order; empty when nothing can run
  // Requests preempted this step, youngest first: back at the front of the waiting queue with
  // their KV and adapter references returned (they stay owned by the scheduler).
  std::vector<const RequestState*> preempted;
};

class Scheduler {
 public:
  using Clock = std::chrono::steady_clock;

  Scheduler(SchedulerOptions options, KvAllocator* kv, AdapterResidency* adapters)
      : options_(options), kv_(kv), adapters_(adapters) {}

  // Queues a new request behind every waiting one.
  void Enqueue(std::unique_ptr<RequestState> request);
  // The step's batch. Sets first_scheduled on newly admitted requests.
  StepBatch Schedule(Clock::time_point now);
  // Returns r's KV pages and adapter references and forgets its computed tokens.
  void ReleaseResources(RequestState& r);

  // Removes (and destroys) every request for which `finish(r)` returns true; `finish` is where
  // the caller completes the request.
  template <typename Fn>
  void RemoveIf(Fn&& finish) {
    std::erase_if(running_, [&](std::unique_ptr<RequestState>& r) { return finish(*r); });
    std::erase_if(waiting_, [&](std::unique_ptr<RequestState>& r) { return finish(*r); });
  }

  const std::vector<std::unique_ptr<RequestState>>& running() const { return running_; }
  const std::deque<std::unique_ptr<RequestState>>& waiting() const { return waiting_; }
  bool idle() const { return running_.empty() && waiting_.empty(); }
  int64_t preemptions() const { return preemptions_; }

 private:
  void Preempt(RequestState& r);

  SchedulerOptions options_;
  KvAllocator* kv_;
  AdapterResidency* adapters_;
  std::vector<std::unique_ptr<RequestState>> running_;  // admission order: oldest first
  std::deque<std::unique_ptr<RequestState>> waiting_;   // FIFO; preempted go to the front
  int64_t preemptions_ = 0;
};

}  // namespace loraserve
