// runtime/token_logprobs.h against a straightforward double-precision log_softmax and a full
// sort of the row: values, the order of the alternatives and its tie rule, k = 0, k at and
// beyond the vocabulary, rows with huge or masked logits.
#include "runtime/token_logprobs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace loraserve {
namespace {

std::vector<double> ReferenceLogSoftmax(const std::vector<float>& logits) {
  double total = 0.0;
  for (float x : logits) total += std::exp(static_cast<double>(x));
  std::vector<double> out;
  for (float x : logits) out.push_back(static_cast<double>(x) - std::log(total));
  return out;
}

// Every id, by logit descending, equal logits by id ascending (a stable sort of the whole row).
std::vector<int32_t> ReferenceOrder(const std::vector<float>& logits) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  return order;
}

std::vector<float> RandomLogits(int n, uint32_t seed, float scale = 4.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> logits(n);
  for (float& x : logits) x = normal(rng);
  return logits;
}

void ExpectMatchesReference(const std::vector<float>& logits, int32_t chosen, int k,
                            double tolerance) {
  const TokenLogprobs got = ComputeTokenLogprobs(logits, chosen, k);
  const std::vector<double> ref = ReferenceLogSoftmax(logits);
  const std::vector<int32_t> order = ReferenceOrder(logits);
  EXPECT_EQ(got.chosen.token, chosen);
  EXPECT_NEAR(got.chosen.logprob, ref[chosen], tolerance);
  const size_t want = std::min(static_cast<size_t>(k), logits.size());
  ASSERT_EQ(got.top.size(), want);
  for (size_t i = 0; i < want; ++i) {
    EXPECT_EQ(got.top[i].token, order[i]) << "rank " << i;
    EXPECT_NEAR(got.top[i].logprob, ref[order[i]], tolerance) << "rank " << i;
  }
}

TEST(TokenLogprobsTest, MatchesDoubleReferenceForEveryK) {
  const std::vector<float> logits = RandomLogits(1000, 1);
  for (int k : {0, 1, 2, 5, 20}) {
    SCOPED_TRACE(k);
    for (int32_t chosen : {0, 17, 999}) ExpectMatchesReference(logits, chosen, k, 2e-6);
  }
}

TEST(TokenLogprobsTest, KZeroGivesOnlyTheChosenToken) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f};
  const TokenLogprobs got = ComputeTokenLogprobs(logits, 2, 0);
  EXPECT_TRUE(got.top.empty());
  EXPECT_EQ(got.chosen.token, 2);
  EXPECT_NEAR(got.chosen.logprob, ReferenceLogSoftmax(logits)[2], 1e-6);
}

TEST(TokenLogprobsTest, TiesRankTheLowerIdFirst) {
  // Three tokens share the top logit, two the next; the k-th place falls inside each group.
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f, 0.0f, 2.0f};
  const std::vector<std::vector<int32_t>> want = {
      {1}, {1, 2}, {1, 2, 4}, {1, 2, 4, 3}, {1, 2, 4, 3, 6}, {1, 2, 4, 3, 6, 0}};
  for (size_t k = 1; k <= want.size(); ++k) {
    const TokenLogprobs got = ComputeTokenLogprobs(logits, 0, static_cast<int>(k));
    std::vector<int32_t> ids;
    for (const TokenLogprob& t : got.top) ids.push_back(t.token);
    EXPECT_EQ(ids, want[k - 1]) << "k = " << k;
  }
  // A flat row: every later id ties with the heap's root and must not displace a lower id.
  const std::vector<float> all_equal(64, 0.25f);
  const TokenLogprobs flat = ComputeTokenLogprobs(all_equal, 63, 10);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(flat.top[i].token, i);
    EXPECT_NEAR(flat.top[i].logprob, -std::log(64.0), 1e-6);
  }
}

TEST(TokenLogprobsTest, KAtOrBeyondTheVocabularyRanksEveryToken) {
  const std::vector<float> logits = RandomLogits(300, 2);
  ExpectMatchesReference(logits, 5, 300, 2e-6);
  ExpectMatchesReference(logits, 5, 299, 2e-6);
  const TokenLogprobs beyond = ComputeTokenLogprobs(logits, 5, 1000);
  ASSERT_EQ(beyond.top.size(), 300u);
  double mass = 0.0;
  for (const TokenLogprob& t : beyond.top) mass += std::exp(static_cast<double>(t.logprob));
  EXPECT_NEAR(mass, 1.0, 1e-5);
}

TEST(TokenLogprobsTest, ChosenMayAlsoBeInTop) {
  const std::vector<float> logits = {0.0f, 5.0f, 1.0f};
  const TokenLogprobs got = ComputeTokenLogprobs(logits, 1, 2);
  ASSERT_EQ(got.top.size(), 2u);
  EXPECT_EQ(got.top[0].token, 1);
  EXPECT_EQ(got.top[0].logprob, got.chosen.logprob);
}

TEST(TokenLogprobsTest, HugeLogitsDoNotOverflow) {
  // exp(1000) overflows float and double: only a max-subtracted sum survives this row.
  std::vector<float> logits = RandomLogits(500, 3);
  for (float& x : logits) x += 1000.0f;
  const TokenLogprobs got = ComputeTokenLogprobs(logits, 7, 3);
  ASSERT_TRUE(std::isfinite(got.chosen.logprob));
  std::vector<float> shifted = logits;
  for (float& x : shifted) x -= 1000.0f;
  ExpectMatchesReference(shifted, 7, 3, 2e-6);
  // log_softmax is shift-invariant; float rounding of the shifted inputs (ulp of 1000 is 6e-5)
  // bounds how closely the two rows can agree.
  EXPECT_NEAR(got.chosen.logprob, ComputeTokenLogprobs(shifted, 7, 0).chosen.logprob, 2e-4);
}

TEST(TokenLogprobsTest, LargeVocabularyStaysAccurate) {
  // A Llama-3-sized row: the float sum of 128k terms would drift; the helper must not.
  const std::vector<float> logits = RandomLogits(128256, 4, 3.0f);
  ExpectMatchesReference(logits, 128255, 20, 1e-5);
}

TEST(TokenLogprobsTest, MaskedEntriesAreMinusInfinityAndNeverRanked) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> logits = {-inf, 1.0f, -inf, 0.0f};
  const TokenLogprobs got = ComputeTokenLogprobs(logits, 0, 2);
  EXPECT_EQ(got.chosen.logprob, -inf);
  ASSERT_EQ(got.top.size(), 2u);
  EXPECT_EQ(got.top[0].token, 1);
  EXPECT_EQ(got.top[1].token, 3);
  EXPECT_NEAR(got.top[0].logprob, -std::log1p(std::exp(-1.0)), 1e-6);
}

}  // namespace
}  // namespace loraserve
