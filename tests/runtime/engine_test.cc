// The engine against itself run one request at a time and against the single-request path:
// concurrency, mixed adapters, cancellation, preemption under memory pressure and merging
// must never change a greedy token.
#include "runtime/engine.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>

#include "runtime/adapter_pool.h"
#include "tests/runtime/engine_test_util.h"
#include "tests/runtime/reference_generate.h"
#include "tests/runtime/test_model_fixture.h"

namespace loraserve {
namespace {

using testing::Greedy;
using testing::LoadTinyModel;
using testing::Outcome;
using testing::RandomAdapter;
using testing::SubmitAsync;

class EngineTest : public ::testing::Test {
 protected:
  std::unique_ptr<Engine> MakeEngine(EngineOptions options = {}) {
    auto model = LoadTinyModel();
    config_ = model->config();
    auto engine = Engine::Create(std::move(model), options);
    EXPECT_TRUE(engine.ok());
    for (int i = 0; i < 6; ++i) {
      auto adapter = RandomAdapter(config_, "a" + std::to_string(i), 4 + 4 * i, 100 + i);
      EXPECT_TRUE((*engine)->RegisterAdapter(adapter).ok());
    }
    return std::move(*engine);
  }

  std::vector<GenerationRequest> MixedRequests(int n) {
    std::vector<GenerationRequest> out;
    for (int i = 0; i < n; ++i) {
      std::vector<int32_t> prompt;
      for (int t = 0; t < 3 + (i * 7) % 29; ++t) prompt.push_back((i * 31 + t * 17) % 500 + 1);
      std::vector<AdapterRef> adapters;
      switch (i % 4) {
        case 0: break;
        case 1: adapters = {{"a" + std::to_string(i % 6), 1.0f}}; break;
        case 2: adapters = {{"a1", 0.5f}, {"a4", 0.75f}}; break;
        case 3: adapters = {{"a" + std::to_string((i + 2) % 6), 1.0f}}; break;
      }
      out.push_back(Greedy(prompt, 6 + i % 5, adapters));
    }
    return out;
  }

  std::vector<std::vector<int32_t>> RunAlone(Engine& engine,
                                             const std::vector<GenerationRequest>& requests) {
    std::vector<std::vector<int32_t>> out;
    for (const auto& r : requests) out.push_back(SubmitAsync(engine, r).get().result.tokens);
    return out;
  }

  ModelConfig config_;
};

TEST_F(EngineTest, ConcurrentMixedAdaptersMatchRunningAlone) {
  auto engine = MakeEngine();
  const auto requests = MixedRequests(24);
  const auto alone = RunAlone(*engine, requests);
  std::vector<std::future<Outcome>> futures;
  for (const auto& r : requests) futures.push_back(SubmitAsync(*engine, r));
  for (size_t i = 0; i < futures.size(); ++i) {
    Outcome o = futures[i].get();
    EXPECT_EQ(o.result.tokens, alone[i]) << "request " << i;
    EXPECT_EQ(o.streamed, alone[i]) << "request " << i;
    EXPECT_EQ(o.result.finish_reason, FinishReason::kLength);
    EXPECT_EQ(static_cast<int>(o.result.tokens.size()), requests[i].max_tokens);
  }
}

// Rank 1, 8 and 512 adapters (512 is above every dimension of the tiny model, as PEFT allows)
// in one running batch: 70-token prompts prefill through SGMV, short ones and every decode
// step through BGMV, and no request's tokens change from running it alone. The pool holds each
// adapter at its own rank: the pages used are the sum of the three adapters' own needs.
TEST_F(EngineTest, Ranks1And8And512InOneBatchMatchRunningAlone) {
  EngineOptions options;
  options.merge_mode = MergeMode::kNever;  // alone, a single adapter would otherwise be merged
  auto model = LoadTinyModel();
  const ModelConfig config = model->config();
  const int64_t page_units = model->KvLayout(options.kv_block_size).page_floats();
  auto engine = Engine::Create(std::move(model), options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  int64_t adapter_pages = 0;
  for (int rank : {1, 8, 512}) {
    auto adapter = RandomAdapter(config, "r" + std::to_string(rank), rank, 300 + rank);
    adapter_pages += AdapterPool::PagesNeeded(*adapter, config, page_units, AdapterStorage::kAuto);
    ASSERT_TRUE((*engine)->RegisterAdapter(adapter).ok());
  }
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 9; ++i) {
    std::vector<int32_t> prompt;
    const int length = i % 3 == 0 ? 4 + i : 70 + i;
    for (int t = 0; t < length; ++t) prompt.push_back((i * 37 + t * 11) % 500 + 1);
    const std::string adapter = std::vector<std::string>{"r1", "r8", "r512"}[i % 3];
    requests.push_back(Greedy(prompt, 5 + i % 3, {{adapter, 1.0f}}));
  }
  const auto alone = RunAlone(**engine, requests);
  std::vector<std::future<Outcome>> futures;
  for (const auto& r : requests) futures.push_back(SubmitAsync(**engine, r));
  for (size_t i = 0; i < futures.size(); ++i) {
    EXPECT_EQ(futures[i].get().result.tokens, alone[i]) << "request " << i;
  }
  EXPECT_EQ((*engine)->Stats().adapter_pages_used, adapter_pages);
  // The adapters change the output: rank 512 differs from the base model.
  const auto base = SubmitAsync(**engine, Greedy(requests[2].prompt_ids, 7)).get().result.tokens;
  EXPECT_NE(base, alone[2]);
}

TEST_F(EngineTest, EngineMatchesSingleRequestPath) {
  auto model = LoadTinyModel();
  auto engine = MakeEngine();
  const std::vector<int32_t> prompt = {5, 9, 33, 71, 2, 8};
  auto reference = testing::ReferenceGenerate(*model, prompt, 10);
  ASSERT_TRUE(reference.ok());
  EXPECT_EQ(SubmitAsync(*engine, Greedy(prompt, 10)).get().result.tokens, *reference);
}

TEST_F(EngineTest, CancelMidStreamReturnsMemoryToBaseline) {
  auto engine = MakeEngine();
  // Warm the adapter so residency is part of the baseline.
  SubmitAsync(*engine, Greedy({1, 2, 3}, 2, {{"a2", 1.0f}})).get();
  const EngineStats before = engine->Stats();
  std::promise<void> first_token;
  std::once_flag once;
  uint64_t id = 0;
  auto future = SubmitAsync(*engine, Greedy({1, 2, 3, 4, 5}, 500, {{"a2", 1.0f}}), &id,
                            [&](const TokenEvent&) { std::call_once(once, [&] { first_token.set_value(); }); });
  first_token.get_future().wait();
  engine->Cancel(id);
  Outcome o = future.get();
  EXPECT_EQ(o.result.finish_reason, FinishReason::kCancelled);
  EXPECT_LT(o.result.tokens.size(), 500u);
  const EngineStats after = engine->Stats();
  EXPECT_EQ(after.kv_pages_used, 0);
  EXPECT_EQ(after.kv_pages_used, before.kv_pages_used);
  EXPECT_EQ(after.adapter_pages_used, before.adapter_pages_used);
  EXPECT_EQ(after.running, 0);
  EXPECT_EQ(after.waiting, 0);
  for (const AdapterInfo& info : engine->ListAdapters()) EXPECT_EQ(info.in_flight, 0) << info.id;
}

TEST_F(EngineTest, MemoryPressurePreemptsAndStillMatches) {
  EngineOptions tight;
  tight.kv_block_size = 4;
  {
    // Room for every adapter plus 12 KV blocks (48 tokens): 12 concurrent requests of up to
    // ~40 tokens each cannot all fit, so the youngest get preempted and recomputed.
    auto model = LoadTinyModel();
    int64_t adapter_pages = 0;
    for (int i = 0; i < 6; ++i) {
      adapter_pages += AdapterPool::PagesNeeded(*RandomAdapter(model->config(), "x", 4 + 4 * i, 100 + i),
                                                model->config(), model->KvLayout(4).page_floats(),
                                                AdapterStorage::kAuto);
    }
    tight.pool_pages = adapter_pages + 12;
  }
  auto engine = MakeEngine(tight);
  const auto requests = MixedRequests(12);
  const auto alone = RunAlone(*engine, requests);
  std::vector<std::future<Outcome>> futures;
  for (const auto& r : requests) futures.push_back(SubmitAsync(*engine, r));
  for (size_t i = 0; i < futures.size(); ++i) {
    EXPECT_EQ(futures[i].get().result.tokens, alone[i]) << "request " << i;
  }
  EXPECT_GT(engine->Stats().preemptions, 0);
  EXPECT_EQ(engine->Stats().kv_pages_used, 0);
}

TEST_F(EngineTest, AutoMergeGivesSameTokensAndUnmergesForMixedTraffic) {
  EngineOptions never;
  never.merge_mode = MergeMode::kNever;
  auto reference = MakeEngine(never);
  EngineOptions automatic;
  automatic.merge_window_seconds = 0.0;
  auto engine = MakeEngine(automatic);
  const auto single = Greedy({4, 8, 15, 16, 23, 42}, 12, {{"a3", 1.0f}});
  const auto expected = SubmitAsync(*reference, single).get().result.tokens;
  EXPECT_EQ(SubmitAsync(*engine, single).get().result.tokens, expected);
  EXPECT_EQ(engine->Stats().merged_adapter, "a3");
  // Mixed traffic forces an exact unmerge; base-model output must be untouched.
  const auto base = Greedy({4, 8, 15, 16, 23, 42}, 12);
  EXPECT_EQ(SubmitAsync(*engine, base).get().result.tokens,
            SubmitAsync(*reference, base).get().result.tokens);
  EXPECT_EQ(engine->Stats().merged_adapter, "");
  EXPECT_GE(engine->Stats().merge_switches, 2);
}

TEST_F(EngineTest, ValidationErrorsNameTheField) {
  auto engine = MakeEngine();
  RequestCallbacks none;
  auto empty = engine->Submit(Greedy({}, 4), none);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  auto unknown = engine->Submit(Greedy({1}, 4, {{"nope", 1.0f}}), none);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(unknown.status().message()).find("adapters[0].adapter_id"),
            std::string::npos);
  // Beyond the context: the client's request to change, not a capacity error to retry.
  auto too_long = engine->Submit(Greedy({1}, 1 << 20), none);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_token = engine->Submit(Greedy({1 << 30}, 4), none);
  EXPECT_EQ(bad_token.status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_weight = engine->Submit(Greedy({1}, 4, {{"a1", std::nanf("")}}), none);
  EXPECT_EQ(bad_weight.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, UnregisterRejectsNewRequestsButInFlightFinish) {
  auto engine = MakeEngine();
  std::promise<void> started;
  std::once_flag once;
  auto future = SubmitAsync(*engine, Greedy({1, 2, 3}, 40, {{"a5", 1.0f}}), nullptr,
                            [&](const TokenEvent&) { std::call_once(once, [&] { started.set_value(); }); });
  started.get_future().wait();
  ASSERT_TRUE(engine->UnregisterAdapter("a5").ok());
  auto rejected = engine->Submit(Greedy({1}, 2, {{"a5", 1.0f}}), {});
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kNotFound);
  const Outcome o = future.get();
  EXPECT_EQ(o.result.finish_reason, FinishReason::kLength);
  EXPECT_EQ(o.result.tokens.size(), 40u);
}

TEST_F(EngineTest, DrainWaitsForInFlightThenRejects) {
  auto engine = MakeEngine();
  auto future = SubmitAsync(*engine, Greedy({1, 2, 3, 4}, 60, {{"a0", 1.0f}}));
  EXPECT_TRUE(engine->Drain(std::chrono::seconds(60)));
  // Drain returned only after the request finished with all its tokens.
  ASSERT_EQ(future.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(future.get().result.tokens.size(), 60u);
  EXPECT_EQ(engine->Submit(Greedy({1}, 2), {}).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, QueueFullIsResourceExhausted) {
  EngineOptions small;
  small.max_waiting = 2;
  small.max_running = 1;
  auto engine = MakeEngine(small);
  std::vector<std::future<Outcome>> futures;
  int rejected = 0;
  for (int i = 0; i < 12; ++i) {
    auto promise = std::make_shared<std::promise<Outcome>>();
    RequestCallbacks cb;
    cb.on_finish = [promise](const RequestResult& r) { promise->set_value({{}, {}, r}); };
    auto id = engine->Submit(Greedy({1, 2}, 30), cb);
    if (!id.ok()) {
      EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
      ++rejected;
    } else {
      futures.push_back(promise->get_future());
    }
  }
  EXPECT_GT(rejected, 0);
  for (auto& f : futures) f.get();
}

TEST_F(EngineTest, ReuploadUnderAPinnedIdIsListedUnpinned) {
  auto engine = MakeEngine();
  ASSERT_TRUE(engine->PinAdapter("a2", true).ok());
  auto pinned = [&](const std::string& id) {
    for (const AdapterInfo& info : engine->ListAdapters()) {
      if (info.id == id) return info.pinned;
    }
    ADD_FAILURE() << id << " is not listed";
    return false;
  };
  EXPECT_TRUE(pinned("a2"));
  ASSERT_TRUE(engine->UnregisterAdapter("a2").ok());
  ASSERT_TRUE(engine->RegisterAdapter(RandomAdapter(config_, "a2", 8, 999)).ok());
  EXPECT_FALSE(pinned("a2"));
}

TEST_F(EngineTest, StatsReadersDoNotStealAdapterLoadSamples) {
  auto engine = MakeEngine();
  SubmitAsync(*engine, Greedy({1, 2, 3}, 2, {{"a0", 1.0f}})).get();
  SubmitAsync(*engine, Greedy({1, 2, 3}, 2, {{"a1", 1.0f}})).get();
  const EngineStats first = engine->Stats();
  const EngineStats second = engine->Stats();
  EXPECT_EQ(first.adapter_load_seconds.count, 2u);
  EXPECT_EQ(second.adapter_load_seconds.count, 2u);
  EXPECT_GT(second.adapter_load_seconds.sum, 0.0);
  uint64_t in_buckets = 0;
  for (uint64_t c : second.adapter_load_seconds.counts) in_buckets += c;
  EXPECT_EQ(in_buckets, 2u);
}

}  // namespace
}  // namespace loraserve
