// The transport-neutral generation call driven through a fake sink against a real engine on
// the tiny model: tokens in order, one finish, field-named validation errors, transport
// refusals, cancellation that frees the engine request, and metrics recorded per outcome.
#include "server/generation_call.h"

#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "tests/server/server_test_util.h"

namespace loraserve::testing {
namespace {

using server::AdapterInput;
using server::ChatPrompt;
using server::GenerationCall;
using server::GenerationInput;
using server::GenerationOutcome;
using server::TextPrompt;
using server::TokenPrompt;
using ::testing::HasSubstr;

// Records what a transport would write; waits are bounded so a broken call fails, not hangs.
class FakeSink : public server::GenerationSink {
 public:
  void OnToken(const TokenEvent& event) override {
    std::lock_guard lock(mutex_);
    if (finishes_ > 0) ++tokens_after_finish_;
    events_.push_back(event);
    changed_.notify_all();
  }
  void OnFinish(const GenerationOutcome& outcome) override {
    std::lock_guard lock(mutex_);
    ++finishes_;
    outcome_ = outcome;
    changed_.notify_all();
  }

  bool WaitForTokens(size_t n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(60), [&] {
      return events_.size() >= n || finishes_ > 0;
    }) && events_.size() >= n;
  }
  GenerationOutcome WaitForFinish() {
    std::unique_lock lock(mutex_);
    EXPECT_TRUE(changed_.wait_for(lock, std::chrono::seconds(60), [&] { return finishes_ > 0; }))
        << "the call never finished";
    return outcome_;
  }
  int finishes() {
    std::lock_guard lock(mutex_);
    return finishes_;
  }
  int tokens_after_finish() {
    std::lock_guard lock(mutex_);
    return tokens_after_finish_;
  }
  std::vector<int32_t> streamed_tokens() {
    std::lock_guard lock(mutex_);
    std::vector<int32_t> ids;
    for (const TokenEvent& e : events_) {
      if (e.token >= 0) ids.push_back(e.token);
    }
    return ids;
  }
  std::vector<TokenEvent> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }
  std::string streamed_text() {
    std::lock_guard lock(mutex_);
    std::string text;
    for (const TokenEvent& e : events_) text += e.text;
    return text;
  }

 private:
  std::mutex mutex_;  // guards everything below
  std::condition_variable changed_;
  std::vector<TokenEvent> events_;
  int finishes_ = 0;
  int tokens_after_finish_ = 0;
  GenerationOutcome outcome_;
};

class GenerationCallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = LlamaModel::Load(TinyModelDir());
    ASSERT_TRUE(model.ok()) << model.status();
    auto tokenizer = Tokenizer::FromFile(TinyModelDir());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
    EngineOptions options;
    options.pool_bytes = 64ll << 20;
    options.tokenizer = tokenizer_.get();
    auto engine = Engine::Create(*std::move(model), options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    core_.engine = engine_.get();
    core_.tokenizer = tokenizer_.get();
    core_.default_max_tokens = 4;
    state_.SetCore(&core_);
  }

  static GenerationInput Tokens(std::vector<int32_t> ids, int max_tokens) {
    GenerationInput input;
    input.prompt = TokenPrompt{std::move(ids)};
    input.max_tokens = max_tokens;
    input.ignore_eos = true;
    return input;
  }
  static GenerationInput Valid() { return Tokens({1, 7, 42, 100, 3}, 8); }

  // The engine frees a cancelled request at its next step; bounded so a leak fails the test.
  void ExpectEngineIdle() {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    EngineStats stats = engine_->Stats();
    while ((stats.running > 0 || stats.waiting > 0 || stats.kv_pages_used > 0) &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      stats = engine_->Stats();
    }
    EXPECT_EQ(stats.running, 0);
    EXPECT_EQ(stats.waiting, 0);
    EXPECT_EQ(stats.kv_pages_used, 0);
  }

  std::string Metrics() { return state_.metrics().registry().Render(); }

  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Engine> engine_;
  server::ServingCore core_;
  server::ServingState state_;
};

TEST_F(GenerationCallTest, StreamsTokensInOrderAndFinishesOnceWithUsage) {
  FakeSink sink;
  GenerationCall call(&state_, &sink);
  call.Start(Valid());
  const GenerationOutcome outcome = sink.WaitForFinish();
  ASSERT_TRUE(outcome.status.ok()) << outcome.status;
  EXPECT_EQ(outcome.finish_reason, FinishReason::kLength);
  EXPECT_EQ(outcome.token_ids.size(), 8u);
  EXPECT_EQ(sink.streamed_tokens(), outcome.token_ids);
  EXPECT_EQ(sink.streamed_text(), outcome.text);
  EXPECT_EQ(outcome.usage.prompt_tokens, 5);
  EXPECT_EQ(outcome.usage.completion_tokens, 8);
  EXPECT_EQ(outcome.prompt_ids, (std::vector<int32_t>{1, 7, 42, 100, 3}));
  EXPECT_GT(outcome.timings.total_seconds, 0);
  EXPECT_EQ(sink.finishes(), 1);
  EXPECT_EQ(sink.tokens_after_finish(), 0);
  const std::string metrics = Metrics();
  EXPECT_THAT(metrics, HasSubstr("loraserve_requests_total{adapter=\"\",status=\"OK\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("loraserve_generation_tokens_total{adapter=\"\"} 8\n"));
  EXPECT_THAT(metrics, HasSubstr("loraserve_inter_token_latency_seconds_count 7\n"));
}

TEST_F(GenerationCallTest, LogprobsReachTheOutcomeParallelToTokensAndStreamWithThem) {
  FakeSink sink;
  GenerationCall call(&state_, &sink);
  GenerationInput input = Valid();
  input.logprobs = 3;
  input.min_tokens = 8;
  call.Start(input);
  const GenerationOutcome outcome = sink.WaitForFinish();
  ASSERT_TRUE(outcome.status.ok()) << outcome.status;
  ASSERT_EQ(outcome.token_ids.size(), 8u);
  ASSERT_EQ(outcome.logprobs.size(), outcome.token_ids.size());
  const std::vector<TokenEvent> events = sink.events();
  std::vector<const TokenEvent*> token_events;
  for (const TokenEvent& e : events) {
    if (e.token >= 0) token_events.push_back(&e);
  }
  ASSERT_EQ(token_events.size(), outcome.token_ids.size());
  for (size_t i = 0; i < outcome.token_ids.size(); ++i) {
    const TokenLogprobs& lp = outcome.logprobs[i];
    EXPECT_EQ(lp.chosen.token, outcome.token_ids[i]);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].token, lp.chosen.token) << "greedy";
    EXPECT_GE(lp.top[0].logprob, lp.top[1].logprob);
    EXPECT_GE(lp.top[1].logprob, lp.top[2].logprob);
    ASSERT_TRUE(token_events[i]->logprobs.has_value());
    EXPECT_EQ(token_events[i]->logprobs->chosen.logprob, lp.chosen.logprob);
  }

  FakeSink plain_sink;
  GenerationCall plain(&state_, &plain_sink);
  plain.Start(Valid());
  const GenerationOutcome plain_outcome = plain_sink.WaitForFinish();
  EXPECT_EQ(plain_outcome.token_ids, outcome.token_ids);
  EXPECT_TRUE(plain_outcome.logprobs.empty());
}

TEST_F(GenerationCallTest, TextAndChatPromptsAreTokenizedAndMaxTokensDefaults) {
  FakeSink text_sink;
  GenerationCall text_call(&state_, &text_sink);
  GenerationInput text = Valid();
  text.prompt = TextPrompt{"the adapter model"};
  text.max_tokens = 0;  // the server default: 4
  text_call.Start(text);
  const GenerationOutcome text_outcome = text_sink.WaitForFinish();
  ASSERT_TRUE(text_outcome.status.ok()) << text_outcome.status;
  EXPECT_EQ(text_outcome.prompt_ids, tokenizer_->Encode("the adapter model", true));
  EXPECT_EQ(text_outcome.token_ids.size(), 4u);

  FakeSink chat_sink;
  GenerationCall chat_call(&state_, &chat_sink);
  GenerationInput chat = Valid();
  chat.prompt = ChatPrompt{{{"user", "hello"}}};
  chat_call.Start(chat);
  const GenerationOutcome chat_outcome = chat_sink.WaitForFinish();
  ASSERT_TRUE(chat_outcome.status.ok()) << chat_outcome.status;
  auto rendered = tokenizer_->ApplyChatTemplate({{"user", "hello"}}, true);
  ASSERT_TRUE(rendered.ok());
  EXPECT_EQ(chat_outcome.prompt_ids, tokenizer_->Encode(*rendered, false));
}

TEST_F(GenerationCallTest, InvalidInputFinishesAtOnceNamingTheField) {
  struct Case {
    GenerationInput input;
    std::string prefix;
  };
  std::vector<Case> cases;
  cases.push_back({Tokens({}, 4), "token_ids.ids: must not be empty"});
  cases.push_back({Tokens({1, 100000}, 4), "token_ids.ids[1]: 100000 is outside"});
  cases.push_back({Valid(), "text: must not be empty"});
  cases.back().input.prompt = TextPrompt{""};
  cases.push_back({Valid(), "chat.messages: must not be empty"});
  cases.back().input.prompt = ChatPrompt{};
  cases.push_back({Valid(), "adapter_id: must not be empty"});
  cases.back().input.adapters = {{"", 1.0f, "adapter_id", "adapter_id"}};
  cases.push_back({Valid(), "mix.adapters[0].weight: must be finite"});
  cases.back().input.adapters = {
      {"a", NAN, "mix.adapters[0].adapter_id", "mix.adapters[0].weight"}};
  cases.push_back({Valid(), "mix.adapters[1].adapter_id: 'a' is listed twice"});
  cases.back().input.adapters = {{"a", 1, "mix.adapters[0].adapter_id", "mix.adapters[0].weight"},
                                 {"a", 2, "mix.adapters[1].adapter_id", "mix.adapters[1].weight"}};
  cases.push_back({Tokens({1, 2}, -1), "max_tokens: must be >= 1"});
  cases.push_back({Valid(), "sampling: temperature"});
  cases.back().input.sampling.emplace().temperature = -1;
  cases.push_back({Valid(), "stop[1]: must not be empty"});
  cases.back().input.stop = {"x", ""};
  cases.push_back({Valid(), "logprobs: at most 20 alternatives"});
  cases.back().input.logprobs = 21;
  cases.push_back({Valid(), "logprobs: must be -1 (none) or >= 0"});
  cases.back().input.logprobs = -2;
  cases.push_back({Valid(), "min_tokens: must be >= 0"});
  cases.back().input.min_tokens = -1;
  cases.push_back({Valid(), "min_tokens: 9 exceeds the most tokens to generate (max_tokens = 8)"});
  cases.back().input.min_tokens = 9;
  cases.push_back({Tokens({1, 2}, 0), "min_tokens: 5 exceeds the most tokens to generate"});
  cases.back().input.min_tokens = 5;  // beyond the server default of 4
  // The explicit limits: stop strings (count, bytes) and the adapters of one mix.
  cases.push_back({Valid(), "stop: at most 16 stop strings, got 17"});
  cases.back().input.stop.assign(17, "x");
  cases.push_back({Valid(), "stop[2]: at most 256 bytes, got 257"});
  cases.back().input.stop = {"a", "b", std::string(257, 'c')};
  cases.push_back({Valid(), "mix.adapters: at most 16 adapters in one request, got 17"});
  for (int i = 0; i < 17; ++i) {
    const std::string field = absl::StrCat("mix.adapters[", i, "]");
    cases.back().input.adapters.push_back(
        {absl::StrCat("a", i), 1.0f, field + ".adapter_id", field + ".weight"});
  }
  for (Case& c : cases) {
    FakeSink sink;
    GenerationCall call(&state_, &sink);
    call.Start(std::move(c.input));
    // Rejected before the engine saw it: finished on this thread, before Start returned.
    ASSERT_EQ(sink.finishes(), 1) << c.prefix;
    const GenerationOutcome outcome = sink.WaitForFinish();
    EXPECT_EQ(outcome.status.code(), absl::StatusCode::kInvalidArgument) << outcome.status;
    EXPECT_TRUE(absl::StartsWith(outcome.status.message(), c.prefix))
        << outcome.status.message() << " should start with " << c.prefix;
    EXPECT_EQ(outcome.finish_reason, FinishReason::kError);
    EXPECT_TRUE(outcome.token_ids.empty());
    EXPECT_TRUE(sink.streamed_tokens().empty());
  }
  EXPECT_THAT(Metrics(),
              HasSubstr("loraserve_requests_total{adapter=\"\",status=\"INVALID_ARGUMENT\"} 18\n"));
  EXPECT_EQ(engine_->Stats().waiting + engine_->Stats().running, 0);
}

TEST_F(GenerationCallTest, ATransportNamesItsOwnFields) {
  // What an OpenAI front end would pass: its field names, not loraserve.v1's.
  GenerationInput input = Tokens({1, 100000}, 4);
  input.fields.token_ids = "prompt";
  FakeSink sink;
  GenerationCall call(&state_, &sink);
  call.Start(input);
  EXPECT_TRUE(absl::StartsWith(sink.WaitForFinish().status.message(), "prompt[1]: "));

  GenerationInput logprobs = Valid();
  logprobs.fields.logprobs = "top_logprobs";
  logprobs.fields.min_tokens = "min_completion_tokens";
  logprobs.logprobs = 30;
  FakeSink logprobs_sink;
  GenerationCall logprobs_call(&state_, &logprobs_sink);
  logprobs_call.Start(logprobs);
  EXPECT_TRUE(absl::StartsWith(logprobs_sink.WaitForFinish().status.message(), "top_logprobs: "));
  GenerationInput min_tokens = Valid();
  min_tokens.fields.min_tokens = "min_completion_tokens";
  min_tokens.min_tokens = 100;
  FakeSink min_tokens_sink;
  GenerationCall min_tokens_call(&state_, &min_tokens_sink);
  min_tokens_call.Start(min_tokens);
  EXPECT_TRUE(absl::StartsWith(min_tokens_sink.WaitForFinish().status.message(),
                               "min_completion_tokens: "));

  GenerationInput sampling = Valid();
  sampling.fields.sampling = "";
  sampling.sampling.emplace().top_p = 2;
  FakeSink sampling_sink;
  GenerationCall sampling_call(&state_, &sampling_sink);
  sampling_call.Start(sampling);
  EXPECT_TRUE(absl::StartsWith(sampling_sink.WaitForFinish().status.message(), "top_p "));
}

TEST_F(GenerationCallTest, TransportRefusalsAndEngineRejectionsAreRecorded) {
  FakeSink refused_sink;
  GenerationCall refused(&state_, &refused_sink);
  refused.Start(absl::UnauthenticatedError("authorization: missing bearer token"));
  EXPECT_EQ(refused_sink.WaitForFinish().status.code(), absl::StatusCode::kUnauthenticated);

  FakeSink unknown_sink;
  GenerationCall unknown(&state_, &unknown_sink);
  GenerationInput input = Valid();
  input.adapters = {{"nope", 1, "adapter_id", "adapter_id"}};
  unknown.Start(input);
  EXPECT_EQ(unknown_sink.WaitForFinish().status.code(), absl::StatusCode::kNotFound);

  const std::string metrics = Metrics();
  EXPECT_THAT(metrics,
              HasSubstr("loraserve_requests_total{adapter=\"\",status=\"UNAUTHENTICATED\"} 1\n"));
  EXPECT_THAT(metrics,
              HasSubstr("loraserve_requests_total{adapter=\"nope\",status=\"NOT_FOUND\"} 1\n"));
}

TEST_F(GenerationCallTest, CancelFreesTheEngineRequest) {
  FakeSink sink;
  GenerationCall call(&state_, &sink);
  call.Start(Tokens({1, 7, 42, 100, 3}, 1900));
  ASSERT_TRUE(sink.WaitForTokens(1));
  call.Cancel();
  call.Cancel();  // idempotent
  const GenerationOutcome outcome = sink.WaitForFinish();
  EXPECT_EQ(outcome.status.code(), absl::StatusCode::kCancelled) << outcome.status;
  EXPECT_EQ(outcome.finish_reason, FinishReason::kCancelled);
  EXPECT_LT(outcome.token_ids.size(), 1900u);
  EXPECT_EQ(sink.finishes(), 1);
  ExpectEngineIdle();
  EXPECT_THAT(Metrics(),
              HasSubstr("loraserve_requests_total{adapter=\"\",status=\"CANCELLED\"} 1\n"));
}

TEST_F(GenerationCallTest, CancelBeforeSubmissionCancelsAtSubmission) {
  FakeSink sink;
  GenerationCall call(&state_, &sink);
  call.Cancel();
  call.Start(Tokens({1, 7, 42, 100, 3}, 1900));
  const GenerationOutcome outcome = sink.WaitForFinish();
  EXPECT_EQ(outcome.status.code(), absl::StatusCode::kCancelled) << outcome.status;
  EXPECT_LT(outcome.token_ids.size(), 1900u);
  ExpectEngineIdle();
}

TEST_F(GenerationCallTest, DrainingServerAnswersUnavailable) {
  state_.SetDraining();
  FakeSink sink;
  GenerationCall call(&state_, &sink);
  call.Start(Valid());
  const GenerationOutcome outcome = sink.WaitForFinish();
  EXPECT_EQ(outcome.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(outcome.status.message(), HasSubstr("shutting down"));
}

TEST_F(GenerationCallTest, CountsAsActiveUntilDestroyedSoShutdownWaitsForTheLastWrite) {
  FakeSink sink;
  auto call = std::make_unique<GenerationCall>(&state_, &sink);
  call->Start(Valid());
  ASSERT_TRUE(sink.WaitForFinish().status.ok());
  const auto now = std::chrono::steady_clock::now();
  EXPECT_FALSE(state_.WaitForCalls(now)) << "finished, but the transport may still be writing";
  call.reset();
  EXPECT_TRUE(state_.WaitForCalls(now));
}

}  // namespace
}  // namespace loraserve::testing
