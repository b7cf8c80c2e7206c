// The scheduler alone, with fake KV and adapter memory: FIFO admission, the token budget,
// chunked prefill, preempting the youngest, no admission in a step that preempted, and requests
// waiting for adapter residency without blocking on anything else.
#include "runtime/scheduler.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace loraserve {
namespace {

// KV in blocks of `block_size` tokens out of `capacity` blocks.
class FakeKv : public KvAllocator {
 public:
  FakeKv(int capacity, int block_size) : free_(capacity), block_size_(block_size) {}
  bool Ensure(RequestState& r, int tokens) override {
    const int needed = (tokens + block_size_ - 1) / block_size_;
    while (static_cast<int>(r.pages.size()) < needed) {
      if (free_ == 0) return false;
      --free_;
      r.pages.push_back(next_page_++);
    }
    return true;
  }
  void Free(RequestState& r) override {
    free_ += static_cast<int>(r.pages.size());
    r.pages.clear();
  }
  int free() const { return free_; }

 private:
  int free_;
  int block_size_;
  int32_t next_page_ = 0;
};

// Adapters listed in `unavailable` cannot be made resident (yet).
class FakeAdapters : public AdapterResidency {
 public:
  bool Acquire(RequestState& r) override {
    if (r.adapters_acquired) return true;
    for (const std::string& key : r.pool_keys) {
      if (unavailable.count(key)) return false;
    }
    for (const std::string& key : r.pool_keys) ++refs[key];
    r.adapters_acquired = true;
    return true;
  }
  void Release(RequestState& r) override {
    if (!r.adapters_acquired) return;
    for (const std::string& key : r.pool_keys) --refs[key];
    r.adapters_acquired = false;
  }
  std::set<std::string> unavailable;
  std::map<std::string, int> refs;
};

std::unique_ptr<RequestState> Request(uint64_t id, int prompt_tokens, int max_tokens = 8,
                                      std::vector<std::string> adapter_keys = {}) {
  auto r = std::make_unique<RequestState>();
  r->id = id;
  r->pool_keys = std::move(adapter_keys);
  r->tokens.assign(prompt_tokens, 1);
  r->request.max_tokens = max_tokens;
  return r;
}

// Marks the batch computed, as the engine does after a forward pass, and appends one sampled
// token to every sequence that reached the end of its tokens.
void Complete(const StepBatch& batch) {
  for (const ScheduledSequence& s : batch.sequences) {
    s.request->num_computed += s.tokens;
    if (s.request->num_computed == static_cast<int>(s.request->tokens.size())) {
      s.request->tokens.push_back(2);
    }
  }
}

std::vector<uint64_t> Ids(const StepBatch& batch) {
  std::vector<uint64_t> ids;
  for (const ScheduledSequence& s : batch.sequences) ids.push_back(s.request->id);
  return ids;
}

class SchedulerTest : public ::testing::Test {
 protected:
  Scheduler::Clock::time_point now_ = Scheduler::Clock::time_point() + std::chrono::seconds(5);
};

TEST_F(SchedulerTest, AdmitsInArrivalOrderWithinTheTokenBudget) {
  FakeKv kv(100, 4);
  FakeAdapters adapters;
  Scheduler scheduler({/*max_batch_tokens=*/10, /*max_running=*/8}, &kv, &adapters);
  scheduler.Enqueue(Request(1, 4));
  scheduler.Enqueue(Request(2, 4));
  scheduler.Enqueue(Request(3, 4));
  const StepBatch batch = scheduler.Schedule(now_);
  ASSERT_EQ(Ids(batch), (std::vector<uint64_t>{1, 2, 3}));
  // 4 + 4 use 8 of 10 tokens; the third prompt gets the remaining 2 as a prefill chunk.
  EXPECT_EQ(batch.sequences[0].tokens, 4);
  EXPECT_EQ(batch.sequences[1].tokens, 4);
  EXPECT_EQ(batch.sequences[2].tokens, 2);
  EXPECT_EQ(scheduler.running().size(), 3u);
  EXPECT_TRUE(scheduler.waiting().empty());
  EXPECT_EQ(scheduler.running()[0]->first_scheduled, now_);
}

TEST_F(SchedulerTest, ChunkedPrefillContinuesNextStepBeforeNewAdmissions) {
  FakeKv kv(100, 4);
  FakeAdapters adapters;
  Scheduler scheduler({/*max_batch_tokens=*/6, /*max_running=*/8}, &kv, &adapters);
  scheduler.Enqueue(Request(1, 14));
  StepBatch first = scheduler.Schedule(now_);
  ASSERT_EQ(Ids(first), (std::vector<uint64_t>{1}));
  EXPECT_EQ(first.sequences[0].tokens, 6);
  Complete(first);
  scheduler.Enqueue(Request(2, 3));
  StepBatch second = scheduler.Schedule(now_);
  // The running prefill takes the whole budget (6 of its remaining 8): no room for request 2.
  ASSERT_EQ(Ids(second), (std::vector<uint64_t>{1}));
  EXPECT_EQ(second.sequences[0].tokens, 6);
  Complete(second);
  StepBatch third = scheduler.Schedule(now_);
  // 2 prompt tokens left for request 1, then request 2's whole prompt (3) fits in the rest.
  ASSERT_EQ(Ids(third), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(third.sequences[0].tokens, 2);
  EXPECT_EQ(third.sequences[1].tokens, 3);
}

TEST_F(SchedulerTest, RunningDecodesComeFirstAndMaxRunningCapsAdmission) {
  FakeKv kv(100, 4);
  FakeAdapters adapters;
  Scheduler scheduler({/*max_batch_tokens=*/64, /*max_running=*/2}, &kv, &adapters);
  for (uint64_t id = 1; id <= 3; ++id) scheduler.Enqueue(Request(id, 5));
  StepBatch first = scheduler.Schedule(now_);
  EXPECT_EQ(Ids(first), (std::vector<uint64_t>{1, 2}));
  Complete(first);
  StepBatch second = scheduler.Schedule(now_);
  ASSERT_EQ(Ids(second), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(second.sequences[0].tokens, 1);  // decode steps
  EXPECT_EQ(scheduler.waiting().size(), 1u);
  EXPECT_EQ(scheduler.waiting().front()->id, 3u);
}

TEST_F(SchedulerTest, PreemptsTheYoungestAndAdmitsNothingInThatStep) {
  // 4 blocks of 4 tokens: two 8-token prompts fill the pool; the next decode of the older one
  // needs a fifth block, so the younger is preempted (recomputed later), never the older.
  FakeKv kv(4, 4);
  FakeAdapters adapters;
  Scheduler scheduler({/*max_batch_tokens=*/64, /*max_running=*/8}, &kv, &adapters);
  scheduler.Enqueue(Request(1, 8, 8, {"a#1"}));
  scheduler.Enqueue(Request(2, 8, 8, {"a#1"}));
  StepBatch first = scheduler.Schedule(now_);
  ASSERT_EQ(Ids(first), (std::vector<uint64_t>{1, 2}));
  Complete(first);
  EXPECT_EQ(kv.free(), 0);
  EXPECT_EQ(adapters.refs["a#1"], 2);
  scheduler.Enqueue(Request(3, 1));  // would fit in the freed memory, must not be admitted

  StepBatch second = scheduler.Schedule(now_);
  ASSERT_EQ(second.preempted.size(), 1u);
  EXPECT_EQ(second.preempted[0]->id, 2u);
  ASSERT_EQ(Ids(second), (std::vector<uint64_t>{1}));
  EXPECT_EQ(scheduler.preemptions(), 1);
  ASSERT_EQ(scheduler.running().size(), 1u);
  ASSERT_EQ(scheduler.waiting().size(), 2u);
  // The preempted request goes to the front of the queue with its memory returned.
  const RequestState& victim = *scheduler.waiting().front();
  EXPECT_EQ(victim.id, 2u);
  EXPECT_EQ(victim.num_computed, 0);
  EXPECT_TRUE(victim.pages.empty());
  EXPECT_FALSE(victim.adapters_acquired);
  EXPECT_EQ(adapters.refs["a#1"], 1);
  EXPECT_EQ(scheduler.waiting().back()->id, 3u);
}

TEST_F(SchedulerTest, PreemptsItselfWhenItIsTheYoungestAndNothingElseFrees) {
  FakeKv kv(2, 4);
  FakeAdapters adapters;
  Scheduler scheduler({/*max_batch_tokens=*/64, /*max_running=*/8}, &kv, &adapters);
  scheduler.Enqueue(Request(1, 8));
  StepBatch first = scheduler.Schedule(now_);
  ASSERT_EQ(Ids(first), (std::vector<uint64_t>{1}));
  Complete(first);
  StepBatch second = scheduler.Schedule(now_);  // needs a third block: none anywhere
  EXPECT_TRUE(second.sequences.empty());
  ASSERT_EQ(second.preempted.size(), 1u);
  EXPECT_EQ(second.preempted[0]->id, 1u);
  EXPECT_EQ(kv.free(), 2);
  ASSERT_EQ(scheduler.waiting().size(), 1u);
  EXPECT_EQ(scheduler.waiting().front()->id, 1u);
}

TEST_F(SchedulerTest, RequestsWaitForAdapterResidencyInArrivalOrder) {
  FakeKv kv(100, 4);
  FakeAdapters adapters;
  adapters.unavailable = {"cold#1"};
  Scheduler scheduler({/*max_batch_tokens=*/64, /*max_running=*/8}, &kv, &adapters);
  scheduler.Enqueue(Request(1, 4, 8, {"hot#1"}));
  scheduler.Enqueue(Request(2, 4, 8, {"cold#1"}));
  scheduler.Enqueue(Request(3, 4));
  StepBatch first = scheduler.Schedule(now_);
  // FIFO: request 2 waits for its adapter and request 3 waits behind it.
  EXPECT_EQ(Ids(first), (std::vector<uint64_t>{1}));
  EXPECT_EQ(scheduler.waiting().size(), 2u);
  EXPECT_FALSE(scheduler.waiting().front()->adapters_acquired);
  EXPECT_TRUE(scheduler.waiting().front()->pages.empty());  // no KV held while it waits
  Complete(first);
  adapters.unavailable.clear();
  StepBatch second = scheduler.Schedule(now_);
  EXPECT_EQ(Ids(second), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(adapters.refs["cold#1"], 1);
}

TEST_F(SchedulerTest, AdmissionThatCannotGetKvReleasesItsAdapters) {
  FakeKv kv(1, 4);
  FakeAdapters adapters;
  Scheduler scheduler({/*max_batch_tokens=*/64, /*max_running=*/8}, &kv, &adapters);
  scheduler.Enqueue(Request(1, 4));
  scheduler.Enqueue(Request(2, 4, 8, {"a#1"}));
  StepBatch batch = scheduler.Schedule(now_);
  EXPECT_EQ(Ids(batch), (std::vector<uint64_t>{1}));
  ASSERT_EQ(scheduler.waiting().size(), 1u);
  EXPECT_EQ(adapters.refs["a#1"], 0);
  EXPECT_FALSE(scheduler.waiting().front()->adapters_acquired);
}

TEST_F(SchedulerTest, RemoveIfReturnsResourcesThroughTheCaller) {
  FakeKv kv(100, 4);
  FakeAdapters adapters;
  Scheduler scheduler({/*max_batch_tokens=*/64, /*max_running=*/8}, &kv, &adapters);
  scheduler.Enqueue(Request(1, 4, 8, {"a#1"}));
  scheduler.Enqueue(Request(2, 4));
  scheduler.Schedule(now_);
  scheduler.RemoveIf([&](RequestState& r) {
    if (r.id != 1) return false;
    scheduler.ReleaseResources(r);
    return true;
  });
  ASSERT_EQ(scheduler.running().size(), 1u);
  EXPECT_EQ(scheduler.running()[0]->id, 2u);
  EXPECT_EQ(adapters.refs["a#1"], 0);
  EXPECT_EQ(kv.free(), 99);
}

}  // namespace
}  // namespace loraserve
