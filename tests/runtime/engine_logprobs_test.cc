// Logprobs and min_tokens through Engine::Submit on the tiny model, against log_softmax of the
// logits that ScorePrompt gives for the same tokens: greedy and sampled tokens, requests that
// did not ask, mixed batches, and EOS held off by min_tokens (its logprobs unmasked).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <numeric>

#include "nlohmann/json.hpp"
#include "runtime/engine.h"
#include "runtime/scoring.h"
#include "tests/runtime/engine_test_util.h"
#include "tests/runtime/test_model_fixture.h"

namespace loraserve {
namespace {

using testing::Greedy;
using testing::LoadTinyModel;
using testing::Outcome;
using testing::RandomAdapter;
using testing::SubmitAsync;

const std::vector<int32_t> kPrompt = {5, 9, 33, 71, 2, 8};

std::vector<double> LogSoftmax(std::span<const float> logits) {
  const double max_logit = *std::max_element(logits.begin(), logits.end());
  double total = 0.0;
  for (float x : logits) total += std::exp(x - max_logit);
  std::vector<double> out;
  for (float x : logits) out.push_back(x - max_logit - std::log(total));
  return out;
}

// Reference log_softmax rows of every generated position: one scoring pass over prompt +
// generated tokens; row i predicts generated token i.
std::vector<std::vector<double>> ScoredLogprobs(const LlamaModel& model,
                                                const std::vector<int32_t>& prompt,
                                                const std::vector<int32_t>& generated) {
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  auto logits = ScorePrompt(model, all, /*all_positions=*/true);
  EXPECT_TRUE(logits.ok()) << logits.status();
  const size_t vocab = model.config().vocab_size;
  std::vector<std::vector<double>> rows;
  for (size_t i = 0; i < generated.size(); ++i) {
    rows.push_back(LogSoftmax(
        std::span<const float>(*logits).subspan((prompt.size() - 1 + i) * vocab, vocab)));
  }
  return rows;
}

// Checks one token's logprobs against a reference row: the chosen value, and top as the k most
// likely in order (where the reference separates neighbours by more than the tolerance).
void ExpectLogprobsMatch(const TokenLogprobs& got, int32_t token, int k,
                         const std::vector<double>& ref, double tolerance) {
  EXPECT_EQ(got.chosen.token, token);
  EXPECT_NEAR(got.chosen.logprob, ref[token], tolerance);
  ASSERT_EQ(got.top.size(), static_cast<size_t>(k));
  std::vector<int32_t> order(ref.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return ref[a] > ref[b]; });
  for (int i = 0; i < k; ++i) {
    EXPECT_NEAR(got.top[i].logprob, ref[got.top[i].token], tolerance) << "rank " << i;
    const bool separated = std::abs(ref[order[i]] - ref[order[i + 1]]) > 10 * tolerance &&
                           (i == 0 || std::abs(ref[order[i]] - ref[order[i - 1]]) > 10 * tolerance);
    if (separated) EXPECT_EQ(got.top[i].token, order[i]) << "rank " << i;
    if (i > 0) EXPECT_GE(got.top[i - 1].logprob, got.top[i].logprob);
  }
}

std::unique_ptr<Engine> MakeEngine(std::unique_ptr<LlamaModel> model = LoadTinyModel()) {
  auto engine = Engine::Create(std::move(model), EngineOptions{});
  EXPECT_TRUE(engine.ok()) << engine.status();
  return std::move(*engine);
}

TEST(EngineLogprobsTest, GreedyLogprobsAreLogSoftmaxOfTheScoredLogits) {
  auto model = LoadTinyModel();
  auto engine = MakeEngine();
  GenerationRequest request = Greedy(kPrompt, 10);
  request.logprobs = 5;
  const Outcome o = SubmitAsync(*engine, request).get();
  ASSERT_EQ(o.result.tokens.size(), 10u);
  ASSERT_EQ(o.result.logprobs.size(), 10u);
  const auto ref = ScoredLogprobs(*model, kPrompt, o.result.tokens);
  for (size_t i = 0; i < o.result.tokens.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "token " << i);
    const TokenLogprobs& lp = o.result.logprobs[i];
    ExpectLogprobsMatch(lp, o.result.tokens[i], 5, ref[i], 1e-4);
    // Greedy: the chosen token is the argmax, so it heads the alternatives.
    EXPECT_EQ(lp.chosen.token, std::max_element(ref[i].begin(), ref[i].end()) - ref[i].begin());
    EXPECT_EQ(lp.top[0].token, lp.chosen.token);
    EXPECT_EQ(lp.top[0].logprob, lp.chosen.logprob);
    EXPECT_LT(lp.chosen.logprob, 0.0f);
  }
  // The stream carries the same logprobs with each token, and none on the final flush.
  std::vector<TokenLogprobs> streamed;
  for (const TokenEvent& e : o.events) {
    EXPECT_EQ(e.logprobs.has_value(), e.token >= 0);
    if (e.logprobs) streamed.push_back(*e.logprobs);
  }
  ASSERT_EQ(streamed.size(), o.result.logprobs.size());
  for (size_t i = 0; i < streamed.size(); ++i) {
    EXPECT_EQ(streamed[i].chosen.token, o.result.logprobs[i].chosen.token);
    EXPECT_EQ(streamed[i].chosen.logprob, o.result.logprobs[i].chosen.logprob);
    EXPECT_EQ(streamed[i].top.size(), o.result.logprobs[i].top.size());
  }
}

TEST(EngineLogprobsTest, SampledTokensReportTheRawDistributionNotTheWarpedOne) {
  auto model = LoadTinyModel();
  auto engine = MakeEngine();
  GenerationRequest request = Greedy(kPrompt, 8);
  request.sampling.temperature = 2.0f;
  request.sampling.top_k = 5;
  request.sampling.seed = 11;
  request.logprobs = 3;
  const Outcome o = SubmitAsync(*engine, request).get();
  ASSERT_EQ(o.result.logprobs.size(), 8u);
  const auto ref = ScoredLogprobs(*model, kPrompt, o.result.tokens);
  bool sampled_below_top = false;
  for (size_t i = 0; i < o.result.tokens.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "token " << i);
    ExpectLogprobsMatch(o.result.logprobs[i], o.result.tokens[i], 3, ref[i], 1e-4);
    sampled_below_top |= o.result.logprobs[i].chosen.token != o.result.logprobs[i].top[0].token;
  }
  // Temperature 2 over the top 5 picks something other than the argmax at least once here,
  // so chosen and top[0] are shown to be independent.
  EXPECT_TRUE(sampled_below_top);
}

TEST(EngineLogprobsTest, RequestsThatDidNotAskGetNone) {
  auto engine = MakeEngine();
  const Outcome none = SubmitAsync(*engine, Greedy(kPrompt, 6)).get();
  EXPECT_EQ(none.result.tokens.size(), 6u);
  EXPECT_TRUE(none.result.logprobs.empty());
  for (const TokenEvent& e : none.events) EXPECT_FALSE(e.logprobs.has_value());

  GenerationRequest chosen_only = Greedy(kPrompt, 6);
  chosen_only.logprobs = 0;
  const Outcome zero = SubmitAsync(*engine, chosen_only).get();
  EXPECT_EQ(zero.result.tokens, none.result.tokens);
  ASSERT_EQ(zero.result.logprobs.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(zero.result.logprobs[i].chosen.token, zero.result.tokens[i]);
    EXPECT_TRUE(zero.result.logprobs[i].top.empty());
  }
}

TEST(EngineLogprobsTest, MixedBatchGivesEachRequestItsLogprobsAsAlone) {
  auto model = LoadTinyModel();
  const ModelConfig config = model->config();
  auto engine = MakeEngine(std::move(model));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        engine->RegisterAdapter(RandomAdapter(config, "a" + std::to_string(i), 4, 50 + i)).ok());
  }
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> prompt;
    for (int t = 0; t < 3 + (i * 5) % 17; ++t) prompt.push_back((i * 29 + t * 13) % 500 + 1);
    std::vector<AdapterRef> adapters;
    if (i % 4 != 0) adapters = {{"a" + std::to_string(i % 3), 1.0f}};
    GenerationRequest r = Greedy(prompt, 5 + i % 4, adapters);
    r.logprobs = i % 3 == 0 ? -1 : (i % 3 == 1 ? 0 : 4);
    if (i % 5 == 2) {
      r.sampling.temperature = 0.8f;
      r.sampling.seed = i;
    }
    requests.push_back(r);
  }
  std::vector<RequestResult> alone;
  for (const auto& r : requests) alone.push_back(SubmitAsync(*engine, r).get().result);
  std::vector<std::future<Outcome>> futures;
  for (const auto& r : requests) futures.push_back(SubmitAsync(*engine, r));
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "request " << i);
    const RequestResult together = futures[i].get().result;
    ASSERT_EQ(together.tokens, alone[i].tokens);
    ASSERT_EQ(together.logprobs.size(), requests[i].logprobs < 0 ? 0u : together.tokens.size());
    ASSERT_EQ(alone[i].logprobs.size(), together.logprobs.size());
    for (size_t t = 0; t < together.logprobs.size(); ++t) {
      const TokenLogprobs& a = alone[i].logprobs[t];
      const TokenLogprobs& b = together.logprobs[t];
      EXPECT_EQ(b.chosen.token, a.chosen.token);
      EXPECT_NEAR(b.chosen.logprob, a.chosen.logprob, 1e-5);
      ASSERT_EQ(b.top.size(), static_cast<size_t>(requests[i].logprobs));
      ASSERT_EQ(a.top.size(), b.top.size());
      for (size_t k = 0; k < a.top.size(); ++k) {
        EXPECT_EQ(b.top[k].token, a.top[k].token);
        EXPECT_NEAR(b.top[k].logprob, a.top[k].logprob, 1e-5);
      }
    }
  }
}

// The tiny model with its eos_token_id set to `eos`, in a folder removed on destruction.
class ModelWithEos {
 public:
  explicit ModelWithEos(int32_t eos) {
    namespace fs = std::filesystem;
    const fs::path source = testing::GeneratedModelDir("tiny_llama", "--seed 3 --layers 2");
    std::string pattern = (fs::temp_directory_path() / "loraserve_eos_XXXXXX").string();
    dir_ = ::mkdtemp(pattern.data());
    fs::copy(source, dir_, fs::copy_options::recursive);
    nlohmann::json config;
    std::ifstream(dir_ / "config.json") >> config;
    config["eos_token_id"] = eos;
    std::ofstream(dir_ / "config.json") << config.dump(2);
  }
  ~ModelWithEos() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::unique_ptr<LlamaModel> Load() const {
    auto model = LlamaModel::Load(dir_.string());
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(*model) : nullptr;
  }

 private:
  std::filesystem::path dir_;
};

TEST(EngineMinTokensTest, EosIsMaskedUntilMinTokensButItsLogprobIsReported) {
  // Make the model's first greedy token its EOS: without min_tokens it stops at once.
  auto base_engine = MakeEngine();
  const int32_t eos = SubmitAsync(*base_engine, Greedy(kPrompt, 1)).get().result.tokens.at(0);
  const ModelWithEos eos_model(eos);
  auto model = eos_model.Load();
  ASSERT_EQ(model->config().eos_token_ids, std::vector<int>{eos});
  auto engine = MakeEngine(eos_model.Load());

  GenerationRequest plain = Greedy(kPrompt, 12);
  plain.ignore_eos = false;
  const RequestResult stopped = SubmitAsync(*engine, plain).get().result;
  EXPECT_EQ(stopped.finish_reason, FinishReason::kStop);
  EXPECT_TRUE(stopped.tokens.empty());

  // The oracle: greedy over scored logits, EOS at -inf while fewer than min_tokens exist.
  const int min_tokens = 4, max_tokens = 12;
  std::vector<int32_t> want;
  FinishReason want_reason = FinishReason::kLength;
  while (static_cast<int>(want.size()) < max_tokens) {
    std::vector<int32_t> context = kPrompt;
    context.insert(context.end(), want.begin(), want.end());
    auto logits = ScorePrompt(*model, context, /*all_positions=*/false);
    ASSERT_TRUE(logits.ok()) << logits.status();
    if (static_cast<int>(want.size()) < min_tokens) {
      (*logits)[eos] = -std::numeric_limits<float>::infinity();
    }
    const int32_t next = std::max_element(logits->begin(), logits->end()) - logits->begin();
    if (next == eos) {
      want_reason = FinishReason::kStop;
      break;
    }
    want.push_back(next);
  }
  ASSERT_GE(want.size(), static_cast<size_t>(min_tokens));

  GenerationRequest held = plain;
  held.min_tokens = min_tokens;
  held.logprobs = 2;
  const RequestResult result = SubmitAsync(*engine, held).get().result;
  EXPECT_EQ(result.tokens, want);
  EXPECT_EQ(result.finish_reason, want_reason);
  ASSERT_FALSE(result.logprobs.empty());
  // The first token was sampled under the mask; its logprobs are of the unmasked row, where
  // EOS is the most likely token and the chosen one is not.
  const auto ref = ScoredLogprobs(*model, kPrompt, result.tokens);
  const TokenLogprobs& first = result.logprobs[0];
  ExpectLogprobsMatch(first, result.tokens[0], 2, ref[0], 1e-4);
  EXPECT_EQ(first.top[0].token, eos);
  EXPECT_EQ(first.top[1].token, result.tokens[0]);
  EXPECT_LT(first.chosen.logprob, first.top[0].logprob);

  // ignore_eos already keeps EOS as a token: min_tokens masks nothing then.
  GenerationRequest ignoring = Greedy(kPrompt, 3);
  ignoring.min_tokens = 3;
  EXPECT_EQ(SubmitAsync(*engine, ignoring).get().result.tokens.at(0), eos);
}

TEST(EngineMinTokensTest, SubmitRejectsOutOfRangeValuesNamingTheField) {
  auto engine = MakeEngine();
  auto expect_invalid = [&](GenerationRequest request, const std::string& field) {
    const auto id = engine->Submit(std::move(request), {});
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_EQ(id.status().message().rfind(field + ":", 0), 0u) << id.status();
  };
  GenerationRequest r = Greedy(kPrompt, 4);
  r.min_tokens = 5;
  expect_invalid(r, "min_tokens");
  r.min_tokens = -1;
  expect_invalid(r, "min_tokens");
  r = Greedy(kPrompt, 4);
  r.logprobs = -2;
  expect_invalid(r, "logprobs");
  r.logprobs = 513;  // the tiny model's vocabulary is 512
  expect_invalid(r, "logprobs");
  r.logprobs = 512;
  r.min_tokens = 4;
  EXPECT_TRUE(engine->Submit(r, {}).ok());
}

}  // namespace
}  // namespace loraserve
