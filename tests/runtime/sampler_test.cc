// runtime/sampler.h against a reference written independently here: greedy and its tie rule,
// the temperature -> top-k -> top-p warper order, seed determinism, parameter validation, and a
// chi-square test of sampled frequencies against softmax(logits / T) restricted and renormalised.
#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

namespace loraserve {
namespace {

// Eight distinct logits with no near-ties, so every top-k/top-p cut below is unambiguous.
const std::vector<float> kLogits = {1.0f, -0.5f, 2.0f, 0.0f, 1.5f, -2.0f, 0.5f, -1.0f};

SamplingParams Params(float temperature, int top_k = 0, float top_p = 1.0f, uint64_t seed = 7) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.seed = seed;
  return p;
}

// The distribution transformers' warpers define: softmax(logits / T); keep the top_k largest;
// renormalise; keep token i iff the mass of the tokens strictly more likely than it is < top_p;
// renormalise. Computed in double by a different route from the sampler (no partial sort, the
// "mass before" form of the top-p rule).
std::vector<double> Reference(const std::vector<float>& logits, float temperature, int top_k,
                              float top_p) {
  const int n = static_cast<int>(logits.size());
  std::vector<double> p(n);
  double total = 0.0;
  for (int i = 0; i < n; ++i) {
    p[i] = std::exp(static_cast<double>(logits[i]) / temperature);
    total += p[i];
  }
  for (double& v : p) v /= total;
  // rank[i]: how many tokens are more likely than token i (logits are distinct).
  std::vector<int> rank(n, 0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) rank[i] += p[j] > p[i] ? 1 : 0;
  }
  if (top_k > 0) {
    for (int i = 0; i < n; ++i) {
      if (rank[i] >= top_k) p[i] = 0.0;
    }
  }
  const double kept = std::accumulate(p.begin(), p.end(), 0.0);
  for (double& v : p) v /= kept;
  std::vector<double> filtered(n, 0.0);
  for (int i = 0; i < n; ++i) {
    double before = 0.0;
    for (int j = 0; j < n; ++j) before += rank[j] < rank[i] ? p[j] : 0.0;
    if (p[i] == 0.0) continue;
    EXPECT_GT(std::abs(before - top_p), 1e-4) << "test logits put a top-p cut on a boundary";
    if (before < top_p) filtered[i] = p[i];
  }
  const double mass = std::accumulate(filtered.begin(), filtered.end(), 0.0);
  for (double& v : filtered) v /= mass;
  return filtered;
}

std::vector<int> Histogram(const SamplingParams& params, const std::vector<float>& logits,
                           int draws) {
  Sampler sampler(params);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) {
    const int32_t token = sampler.Sample(logits);
    EXPECT_GE(token, 0);
    EXPECT_LT(token, static_cast<int32_t>(logits.size()));
    if (token >= 0 && token < static_cast<int32_t>(logits.size())) ++counts[token];
  }
  return counts;
}

// Pearson's chi-square over the reference support; a draw outside it is infinitely unlikely.
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& expected_p) {
  const double draws = std::accumulate(counts.begin(), counts.end(), 0.0);
  double chi2 = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double expected = expected_p[i] * draws;
    if (expected == 0.0) {
      if (counts[i] > 0) return INFINITY;
      continue;
    }
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

// At most 7 degrees of freedom: P(chi2 > 40) < 1e-5 for a correct sampler, and the seed is fixed
// so the outcome is deterministic; the wrong references below score in the hundreds or more.
constexpr double kChiSquareLimit = 40.0;
constexpr int kDraws = 20000;

TEST(ArgmaxTest, PicksLargestAndFirstOfTies) {
  EXPECT_EQ(Argmax(kLogits), 2);
  const std::vector<float> tied = {0.5f, 3.0f, -1.0f, 3.0f, 3.0f};
  EXPECT_EQ(Argmax(tied), 1);  // std::max_element: the lowest index among equal maxima
  const std::vector<float> negative = {-5.0f, -3.0f, -4.0f};
  EXPECT_EQ(Argmax(negative), 1);
}

TEST(SamplerTest, ZeroTemperatureIsGreedyWhateverTheSeedAndWarpers) {
  const std::vector<float> tied = {0.5f, 3.0f, -1.0f, 3.0f};
  for (uint64_t seed : {0ull, 1ull, 12345ull}) {
    Sampler sampler(Params(0.0f, /*top_k=*/3, /*top_p=*/0.5f, seed));
    for (int i = 0; i < 50; ++i) {
      ASSERT_EQ(sampler.Sample(kLogits), 2);
      ASSERT_EQ(sampler.Sample(tied), 1);
    }
  }
}

TEST(SamplerTest, TopKOneIsGreedyAtAnyTemperature) {
  Sampler sampler(Params(5.0f, /*top_k=*/1));
  for (int i = 0; i < 200; ++i) ASSERT_EQ(sampler.Sample(kLogits), 2);
}

TEST(SamplerTest, TinyTemperatureConcentratesOnArgmax) {
  Sampler sampler(Params(0.01f));
  for (int i = 0; i < 200; ++i) ASSERT_EQ(sampler.Sample(kLogits), 2);
}

TEST(SamplerTest, TopKKeepsExactlyTheKMostLikely) {
  // A high temperature flattens the distribution so each kept token shows up many times.
  for (int k : {2, 3, 5}) {
    const std::vector<int> counts = Histogram(Params(4.0f, k), kLogits, 4000);
    std::vector<int> by_logit(kLogits.size());
    std::iota(by_logit.begin(), by_logit.end(), 0);
    std::sort(by_logit.begin(), by_logit.end(),
              [](int a, int b) { return kLogits[a] > kLogits[b]; });
    for (int r = 0; r < static_cast<int>(by_logit.size()); ++r) {
      if (r < k) {
        EXPECT_GT(counts[by_logit[r]], 0) << "k=" << k << ": rank " << r << " never sampled";
      } else {
        EXPECT_EQ(counts[by_logit[r]], 0) << "k=" << k << ": rank " << r << " was sampled";
      }
    }
  }
}

TEST(SamplerTest, TopKBeyondVocabularyIsOff) {
  const std::vector<int> off = Histogram(Params(1.0f, 0), kLogits, kDraws);
  const std::vector<int> large = Histogram(Params(1.0f, 100), kLogits, kDraws);
  const std::vector<double> full = Reference(kLogits, 1.0f, 0, 1.0f);
  EXPECT_LT(ChiSquare(off, full), kChiSquareLimit);
  EXPECT_LT(ChiSquare(large, full), kChiSquareLimit);
}

TEST(SamplerTest, TopPKeepsSmallestSetReachingP) {
  // softmax(kLogits) sorted: .403 .244 .148 .090 ...; cumulative .403 .647 .795 .885.
  struct Case {
    float top_p;
    std::set<int32_t> support;
  };
  const std::vector<Case> cases = {
      {0.30f, {2}},           // the top token alone already reaches p
      {0.50f, {2, 4}},        // .403 < .5 <= .647
      {0.70f, {2, 4, 0}},     // .647 < .7 <= .795
      {0.85f, {2, 4, 0, 6}},  // .795 < .85 <= .885
  };
  for (const Case& c : cases) {
    const std::vector<int> counts = Histogram(Params(1.0f, 0, c.top_p), kLogits, 4000);
    for (int32_t t = 0; t < static_cast<int32_t>(kLogits.size()); ++t) {
      if (c.support.contains(t)) {
        EXPECT_GT(counts[t], 0) << "top_p=" << c.top_p << ": token " << t << " never sampled";
      } else {
        EXPECT_EQ(counts[t], 0) << "top_p=" << c.top_p << ": token " << t << " was sampled";
      }
    }
  }
}

TEST(SamplerTest, TopPSeesTheTemperatureScaledDistribution) {
  // At T=1 top_p=0.5 keeps two tokens; at T=0.25 the top token has .87 of the mass alone.
  // A top-p cut computed before temperature would keep both.
  const std::vector<int> counts = Histogram(Params(0.25f, 0, 0.5f), kLogits, 2000);
  EXPECT_EQ(counts[2], 2000);
}

TEST(SamplerTest, TopPSeesTheTopKRenormalisedDistribution) {
  // Logits log(.4), log(.3), log(.2), log(.1): top_k=2 renormalises to .571/.429, so top_p=.55
  // keeps only the first; a top-p over the full distribution (.4 < .55) would keep two.
  const std::vector<float> logits = {std::log(0.4f), std::log(0.3f), std::log(0.2f),
                                     std::log(0.1f)};
  const std::vector<int> counts = Histogram(Params(1.0f, 2, 0.55f), logits, 2000);
  EXPECT_EQ(counts[0], 2000);
}

TEST(SamplerTest, SameSeedSameSequenceOtherSeedAnother) {
  const std::vector<float> flat(16, 0.0f);  // uniform: every draw carries 4 bits
  auto sequence = [&](uint64_t seed) {
    Sampler sampler(Params(1.0f, 0, 1.0f, seed));
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) out.push_back(sampler.Sample(flat));
    return out;
  };
  const std::vector<int32_t> a = sequence(42);
  EXPECT_EQ(a, sequence(42));
  EXPECT_NE(a, sequence(43));
  EXPECT_NE(a, sequence(0));
  // The generator advances between draws: not one token repeated 200 times.
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 8u);
}

TEST(SamplerTest, SampledFrequenciesMatchReference) {
  struct Case {
    float temperature;
    int top_k;
    float top_p;
  };
  const std::vector<Case> cases = {
      {1.0f, 0, 1.0f}, {2.0f, 0, 1.0f},  {0.6f, 0, 1.0f},
      {0.7f, 3, 1.0f}, {1.0f, 0, 0.70f}, {1.5f, 5, 0.80f},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "T=" << c.temperature << " top_k=" << c.top_k << " top_p=" << c.top_p);
    const std::vector<int> counts =
        Histogram(Params(c.temperature, c.top_k, c.top_p, /*seed=*/2024), kLogits, kDraws);
    EXPECT_LT(ChiSquare(counts, Reference(kLogits, c.temperature, c.top_k, c.top_p)),
              kChiSquareLimit);
  }
}

TEST(SamplerTest, ChiSquareRejectsPlausibleWrongSamplers) {
  // The check above has power: the same draws scored against what a sampler with a typical bug
  // would produce fail it by a wide margin.
  const std::vector<int> tempered = Histogram(Params(2.0f, 0, 1.0f, 2024), kLogits, kDraws);
  EXPECT_GT(ChiSquare(tempered, Reference(kLogits, 1.0f, 0, 1.0f)), 10 * kChiSquareLimit)
      << "temperature ignored";
  const std::vector<int> nucleus = Histogram(Params(1.0f, 0, 0.70f, 2024), kLogits, kDraws);
  EXPECT_GT(ChiSquare(nucleus, Reference(kLogits, 1.0f, 0, 0.60f)), 10 * kChiSquareLimit)
      << "top-p one token short";
  EXPECT_GT(ChiSquare(nucleus, Reference(kLogits, 1.0f, 0, 0.85f)), 10 * kChiSquareLimit)
      << "top-p one token long";
  const std::vector<int> top3 = Histogram(Params(0.7f, 3, 1.0f, 2024), kLogits, kDraws);
  EXPECT_GT(ChiSquare(top3, Reference(kLogits, 0.7f, 0, 1.0f)), 10 * kChiSquareLimit)
      << "top-k ignored";
}

TEST(SamplingParamsTest, ValidateAcceptsDefaultsAndLimits) {
  EXPECT_TRUE(SamplingParams{}.Validate().ok());
  EXPECT_TRUE(Params(0.0f).Validate().ok());
  EXPECT_TRUE(Params(100.0f, 1000, 1.0f).Validate().ok());
  EXPECT_TRUE(Params(1.0f, 0, 1e-6f).Validate().ok());
}

TEST(SamplingParamsTest, ValidateRejectsBadValuesNamingTheField) {
  const float nan = std::nanf("");
  struct Case {
    SamplingParams params;
    const char* field;
  };
  const std::vector<Case> cases = {
      {Params(-0.1f), "temperature"},      {Params(nan), "temperature"},
      {Params(INFINITY), "temperature"},   {Params(1.0f, -1), "top_k"},
      {Params(1.0f, 0, 0.0f), "top_p"},    {Params(1.0f, 0, -0.5f), "top_p"},
      {Params(1.0f, 0, 1.0001f), "top_p"}, {Params(1.0f, 0, nan), "top_p"},
      {Params(0.0f, 0, 2.0f), "top_p"},  // checked even when greedy ignores it
  };
  for (const Case& c : cases) {
    const absl::Status status = c.params.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(status.message().find(c.field), std::string::npos) << status;
  }
}

}  // namespace
}  // namespace loraserve
