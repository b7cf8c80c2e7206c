// The adapter tiers through the Engine's public interface: stored adapters registered from an
// index entry and read by the loader thread on first use, the host tier's byte budget and pins,
// and the awkward timings (a slow load, a failing load, an unload or an eviction mid-load) made
// deterministic with fake loaders that wait on a gate.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>

#include "runtime/engine.h"
#include "tests/runtime/engine_test_util.h"
#include "tests/runtime/test_model_fixture.h"

namespace loraserve {
namespace {

using testing::Greedy;
using testing::LoadTinyModel;
using testing::Outcome;
using testing::RandomAdapter;
using testing::SubmitAsync;
using namespace std::chrono_literals;

// A loader that hands out a fixed adapter, counts its calls, records their order and, while
// its gate is closed, blocks (the load "takes" as long as the test wants).
class FakeStore {
 public:
  AdapterLoadFn Loader(std::shared_ptr<const LoraAdapter> adapter, bool gated = false,
                       absl::Status failure = absl::OkStatus()) {
    return [this, adapter, gated, failure]() -> absl::StatusOr<std::shared_ptr<const LoraAdapter>> {
      {
        std::lock_guard<std::mutex> lock(mu_);
        order_.push_back(adapter->id);
        ++calls_[adapter->id];
      }
      if (gated) gate_.wait();
      if (!failure.ok()) return failure;
      return adapter;
    };
  }
  // A test that fails with the gate shut must still let the engine's loader finish.
  ~FakeStore() { Open(); }
  void Open() { std::call_once(opened_, [this] { open_.set_value(); }); }
  int calls(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_[id];
  }
  std::vector<std::string> order() {
    std::lock_guard<std::mutex> lock(mu_);
    return order_;
  }

 private:
  std::once_flag opened_;
  std::promise<void> open_;
  std::shared_future<void> gate_ = open_.get_future().share();
  std::mutex mu_;
  std::map<std::string, int> calls_;
  std::vector<std::string> order_;
};

// Declared after the engine: opens the store's gate when a test leaves early (a failed ASSERT),
// so the engine's destructor, which joins the loader, is not left waiting on a shut gate.
struct OpenAtExit {
  FakeStore* store;
  ~OpenAtExit() { store->Open(); }
};

class AdapterTiersTest : public ::testing::Test {
 protected:
  std::unique_ptr<Engine> MakeEngine(EngineOptions options = {}) {
    options.merge_mode = MergeMode::kNever;  // keep every request on the LoRA kernels
    auto model = LoadTinyModel();
    config_ = model->config();
    auto engine = Engine::Create(std::move(model), options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return std::move(*engine);
  }
  std::shared_ptr<const LoraAdapter> Adapter(const std::string& id, uint32_t seed) {
    return RandomAdapter(config_, id, 8, seed);
  }
  void RegisterStored(Engine& engine, const std::shared_ptr<const LoraAdapter>& adapter,
                      AdapterLoadFn load) {
    ASSERT_TRUE(engine.RegisterStoredAdapter(SummarizeAdapter(*adapter), std::move(load)).ok());
  }
  static AdapterInfo::State StateOf(Engine& engine, const std::string& id) {
    for (const AdapterInfo& info : engine.ListAdapters()) {
      if (info.id == id) return info.state;
    }
    ADD_FAILURE() << id << " is not listed";
    return AdapterInfo::State::kStored;
  }
  // Polls until `done` holds (stats are published once per step).
  template <typename F>
  static bool Eventually(F done) {
    for (int i = 0; i < 400; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return done();
  }
  GenerationRequest Request(const std::string& adapter, int tokens = 6) {
    return Greedy({3, 14, 15, 92, 65}, tokens, {{adapter, 1.0f}});
  }
  std::vector<int32_t> Alone(const std::shared_ptr<const LoraAdapter>& adapter, int tokens = 6) {
    auto engine = MakeEngine();
    EXPECT_TRUE(engine->RegisterAdapter(adapter).ok());
    return SubmitAsync(*engine, Request(adapter->id, tokens)).get().result.tokens;
  }

  ModelConfig config_;
};

TEST_F(AdapterTiersTest, StoredAdapterIsReadOnFirstUseAndAnswersLikeOneInMemory) {
  // Before the engine: its loader thread calls into the store until the engine is gone.
  FakeStore store;
  auto engine = MakeEngine();
  const auto adapter = Adapter("s", 7);
  const std::vector<int32_t> expected = Alone(adapter);
  RegisterStored(*engine, adapter, store.Loader(adapter));
  EXPECT_EQ(StateOf(*engine, "s"), AdapterInfo::State::kStored);
  EXPECT_EQ(store.calls("s"), 0);  // registration reads nothing
  const AdapterInfo listed = engine->ListAdapters()[0];
  EXPECT_EQ(listed.max_rank, 8);
  EXPECT_EQ(listed.bytes, adapter->weight_bytes);

  EXPECT_EQ(SubmitAsync(*engine, Request("s")).get().result.tokens, expected);
  EXPECT_EQ(SubmitAsync(*engine, Request("s")).get().result.tokens, expected);
  EXPECT_EQ(store.calls("s"), 1);  // the second request found it in host memory
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.host_loads, 1);
  EXPECT_EQ(stats.host_misses, 1);
  EXPECT_EQ(stats.host_hits, 1);
  EXPECT_EQ(stats.host_load_seconds.count, 1u);
  EXPECT_EQ(stats.host_bytes_used, static_cast<int64_t>(adapter->weight_bytes));
  EXPECT_EQ(stats.adapters_host, 1);
  EXPECT_NE(StateOf(*engine, "s"), AdapterInfo::State::kStored);
}

TEST_F(AdapterTiersTest, HostBudgetEvictsLeastRecentlyUsedButNeverAPinnedAdapter) {
  // Before the engine: its loader thread calls into the store until the engine is gone.
  FakeStore store;
  std::vector<std::shared_ptr<const LoraAdapter>> adapters;
  for (int i = 0; i < 4; ++i) adapters.push_back(RandomAdapter(LoadTinyModel()->config(),
                                                               "h" + std::to_string(i), 8, 20 + i));
  EngineOptions options;
  options.host_cache_bytes = adapters[0]->weight_bytes * 5 / 2;  // room for two
  auto engine = MakeEngine(options);
  for (const auto& adapter : adapters) RegisterStored(*engine, adapter, store.Loader(adapter));
  ASSERT_TRUE(engine->PinAdapter("h0", true).ok());
  ASSERT_TRUE(Eventually([&] { return StateOf(*engine, "h0") != AdapterInfo::State::kStored &&
                                      StateOf(*engine, "h0") != AdapterInfo::State::kLoading; }))
      << "pinning brings the adapter up to host memory";
  for (int round = 0; round < 2; ++round) {
    for (int i = 1; i < 4; ++i) {
      const std::string id = "h" + std::to_string(i);
      EXPECT_EQ(SubmitAsync(*engine, Request(id, 2)).get().result.finish_reason,
                FinishReason::kLength);
      const EngineStats stats = engine->Stats();
      EXPECT_LE(stats.host_bytes_used, stats.host_budget_bytes);
    }
  }
  EXPECT_EQ(store.calls("h0"), 1);  // pinned: never evicted, never read again
  for (int i = 1; i < 4; ++i) EXPECT_EQ(store.calls("h" + std::to_string(i)), 2) << i;
  ASSERT_TRUE(Eventually([&] { return engine->Stats().host_evictions == 5; }));
  EXPECT_EQ(engine->Stats().adapters_host, 2);
}

TEST_F(AdapterTiersTest, RequestsDoNotWaitBehindTheLoadOfAnAdapterTheyDoNotUse) {
  // Before the engine: its loader thread calls into the store until the engine is gone.
  FakeStore store;
  auto engine = MakeEngine();
  const OpenAtExit open_at_exit{&store};
  const auto slow = Adapter("slow", 1);
  const auto ready = Adapter("ready", 2);
  const std::vector<int32_t> expected_slow = Alone(slow);
  RegisterStored(*engine, slow, store.Loader(slow, /*gated=*/true));
  ASSERT_TRUE(engine->RegisterAdapter(ready).ok());
  auto waiting = SubmitAsync(*engine, Request("slow"));
  ASSERT_TRUE(Eventually([&] { return engine->Stats().requests_waiting_for_adapter == 1; }));
  EXPECT_EQ(StateOf(*engine, "slow"), AdapterInfo::State::kLoading);
  EXPECT_EQ(engine->Stats().pending_adapters, std::vector<std::string>{"slow"});
  // Base and in-memory adapter requests run to the end while the load is stuck.
  EXPECT_EQ(SubmitAsync(*engine, Greedy({1, 2, 3}, 4)).get().result.tokens.size(), 4u);
  EXPECT_EQ(SubmitAsync(*engine, Request("ready")).get().result.finish_reason,
            FinishReason::kLength);
  EXPECT_EQ(waiting.wait_for(0s), std::future_status::timeout);
  store.Open();
  EXPECT_EQ(waiting.get().result.tokens, expected_slow);
  ASSERT_TRUE(Eventually([&] { return engine->Stats().requests_waiting_for_adapter == 0; }));
}

TEST_F(AdapterTiersTest, ALoadFailureFailsOnlyTheRequestsThatNeedTheAdapterAndIsLogged) {
  // Before the engine: its loader thread calls into the store until the engine is gone.
  FakeStore store;
  std::mutex log_mu;
  std::vector<std::string> warnings;
  EngineOptions options;
  options.log_warning = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu);
    warnings.push_back(line);
  };
  auto engine = MakeEngine(options);
  const OpenAtExit open_at_exit{&store};
  const auto broken = Adapter("broken", 3);
  RegisterStored(*engine, broken,
                 store.Loader(broken, true, absl::DataLossError("sha256 does not match")));
  auto first = SubmitAsync(*engine, Request("broken"));
  auto second = SubmitAsync(*engine, Request("broken"));
  auto base = SubmitAsync(*engine, Greedy({1, 2, 3}, 4));
  // Both wait on the one load (a request arriving after a failed load would try again).
  ASSERT_TRUE(Eventually([&] { return engine->Stats().requests_waiting_for_adapter == 2; }));
  store.Open();
  for (auto* f : {&first, &second}) {
    const RequestResult result = f->get().result;
    EXPECT_EQ(result.finish_reason, FinishReason::kError);
    EXPECT_EQ(result.status.code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(result.status.message().find("adapters[0].adapter_id: adapter 'broken'"),
              std::string::npos)
        << result.status;
    EXPECT_NE(result.status.message().find("sha256 does not match"), std::string::npos);
  }
  EXPECT_EQ(base.get().result.finish_reason, FinishReason::kLength);
  EXPECT_EQ(store.calls("broken"), 1);  // both requests waited on the one load
  ASSERT_TRUE(Eventually([&] { return engine->Stats().host_load_failures == 1; }));
  std::lock_guard<std::mutex> lock(log_mu);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("'broken'"), std::string::npos);
}

TEST_F(AdapterTiersTest, UnloadDuringLoadServesTheWaitingRequestAndLeavesNothingBehind) {
  // Before the engine: its loader thread calls into the store until the engine is gone.
  FakeStore store;
  auto engine = MakeEngine();
  const OpenAtExit open_at_exit{&store};
  const auto adapter = Adapter("u", 4);
  const std::vector<int32_t> expected = Alone(adapter);
  RegisterStored(*engine, adapter, store.Loader(adapter, /*gated=*/true));
  auto waiting = SubmitAsync(*engine, Request("u"));
  ASSERT_TRUE(Eventually([&] { return StateOf(*engine, "u") == AdapterInfo::State::kLoading; }));
  ASSERT_TRUE(engine->UnregisterAdapter("u").ok());
  EXPECT_EQ(engine->Submit(Request("u"), {}).status().code(), absl::StatusCode::kNotFound);
  store.Open();
  EXPECT_EQ(waiting.get().result.tokens, expected);  // admitted before the unload: it finishes
  // Neither the host tier nor the pool keeps the retired registration.
  ASSERT_TRUE(Eventually([&] {
    const EngineStats s = engine->Stats();
    return s.adapters_resident == 0 && s.adapter_pages_used == 0;
  }));
  EXPECT_EQ(engine->Stats().adapters_host, 0);
  EXPECT_EQ(engine->Stats().host_bytes_used, 0);
}

TEST_F(AdapterTiersTest, EvictionWhileALoadIsInFlightKeepsBothRequestsCorrect) {
  // Before the engine: its loader thread calls into the store until the engine is gone.
  FakeStore store;
  FakeStore reload;
  const auto in_memory = RandomAdapter(LoadTinyModel()->config(), "m", 8, 5);
  EngineOptions options;
  options.host_cache_bytes = in_memory->weight_bytes * 3 / 2;  // room for one
  auto engine = MakeEngine(options);
  const OpenAtExit open_at_exit{&store};
  const auto loading = Adapter("l", 6);
  const std::vector<int32_t> expected_m = Alone(in_memory, 12);
  const std::vector<int32_t> expected_l = Alone(loading, 12);
  ASSERT_TRUE(engine->RegisterAdapter(in_memory, reload.Loader(in_memory)).ok());
  RegisterStored(*engine, loading, store.Loader(loading, /*gated=*/true));
  auto l = SubmitAsync(*engine, Request("l", 12));
  std::promise<void> m_started;
  std::once_flag once;
  auto m = SubmitAsync(*engine, Request("m", 12), nullptr, [&](const TokenEvent&) {
    std::call_once(once, [&] { m_started.set_value(); });
  });  // a host hit: it runs while "l" loads
  ASSERT_EQ(m_started.get_future().wait_for(30s), std::future_status::ready);
  EXPECT_EQ(l.wait_for(0s), std::future_status::timeout);
  store.Open();  // inserting "l" evicts "m" from host memory (its request holds its copy)
  EXPECT_EQ(l.get().result.tokens, expected_l);
  EXPECT_EQ(m.get().result.tokens, expected_m);
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.host_evictions, 1);
  EXPECT_LE(stats.host_bytes_used, stats.host_budget_bytes);
  EXPECT_EQ(reload.calls("m"), 0);
  // "m" comes back from the store on its next use.
  EXPECT_EQ(SubmitAsync(*engine, Request("m", 12)).get().result.tokens, expected_m);
  EXPECT_EQ(reload.calls("m"), 1);
}

TEST_F(AdapterTiersTest, LoadsRunInArrivalOrderAndOncePerAdapter) {
  // Before the engine: its loader thread calls into the store until the engine is gone.
  FakeStore store;
  auto engine = MakeEngine();
  const OpenAtExit open_at_exit{&store};
  std::vector<std::shared_ptr<const LoraAdapter>> adapters;
  for (const char* id : {"c", "a", "b"}) adapters.push_back(Adapter(id, id[0]));
  RegisterStored(*engine, adapters[0], store.Loader(adapters[0], /*gated=*/true));
  for (int i = 1; i < 3; ++i) RegisterStored(*engine, adapters[i], store.Loader(adapters[i]));
  std::vector<std::future<Outcome>> futures;
  futures.push_back(SubmitAsync(*engine, Request("c")));
  ASSERT_TRUE(Eventually([&] { return store.calls("c") == 1; }));
  for (const char* id : {"a", "b", "a", "c"}) futures.push_back(SubmitAsync(*engine, Request(id)));
  ASSERT_TRUE(Eventually([&] { return engine->Stats().requests_waiting_for_adapter == 5; }));
  store.Open();
  for (auto& f : futures) EXPECT_EQ(f.get().result.finish_reason, FinishReason::kLength);
  EXPECT_EQ(store.order(), (std::vector<std::string>{"c", "a", "b"}));
}

TEST_F(AdapterTiersTest, CancelAndDeadlineReachRequestsWaitingForALoad) {
  // Before the engine: its loader thread calls into the store until the engine is gone.
  FakeStore store;
  auto engine = MakeEngine();
  const OpenAtExit open_at_exit{&store};
  const auto adapter = Adapter("w", 8);
  RegisterStored(*engine, adapter, store.Loader(adapter, /*gated=*/true));
  uint64_t id = 0;
  auto cancelled = SubmitAsync(*engine, Request("w"), &id);
  GenerationRequest late = Request("w");
  late.deadline = std::chrono::steady_clock::now() + 50ms;
  auto expired = SubmitAsync(*engine, late);
  engine->Cancel(id);
  EXPECT_EQ(cancelled.get().result.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(expired.get().result.finish_reason, FinishReason::kDeadline);
  store.Open();
  ASSERT_TRUE(Eventually([&] { return engine->Stats().host_loads == 1; }));
  EXPECT_EQ(engine->Stats().requests_waiting_for_adapter, 0);
}

}  // namespace
}  // namespace loraserve
