// Offline fusion: exactness of cat, PEFT's factor-wise formula for linear, agreement of the two SVD
// paths, DARE's drop-and-rescale properties, and a write/parse round trip of the result. Parity
// with PEFT itself on real files is tests/python/test_fusion_parity.py.
#include "adapters/fusion.h"

#include <Eigen/Dense>
#include <cmath>
#include <random>

#include "adapters/peft_writer.h"
#include "gtest/gtest.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve {
namespace {

using testing::TinyBase;
using Matrix = Eigen::MatrixXd;

LoraModuleWeights RandomModule(const ModelConfig& base, Module m, int rank, float scaling,
                               std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.5f);
  const ModuleDims dims = base.Dims(m);
  LoraModuleWeights w;
  w.rank = rank;
  w.scaling = scaling;
  w.a.resize(static_cast<size_t>(rank) * dims.in);
  w.b.resize(static_cast<size_t>(dims.out) * rank);
  for (float& v : w.a) v = normal(rng);
  for (float& v : w.b) v = normal(rng);
  return w;
}

// An adapter with rank `rank` on `modules` in every layer.
LoraAdapter RandomAdapter(const std::string& id, int rank, float scaling,
                          const std::vector<Module>& modules, uint32_t seed) {
  const ModelConfig base = TinyBase();
  std::mt19937 rng(seed);
  LoraAdapter adapter;
  adapter.id = id;
  adapter.config.r = rank;
  adapter.config.lora_alpha = rank * scaling;
  adapter.num_layers = base.num_layers;
  adapter.modules.resize(base.num_layers);
  for (int layer = 0; layer < base.num_layers; ++layer) {
    for (Module m : modules) {
      adapter.modules[layer][static_cast<int>(m)] = RandomModule(base, m, rank, scaling, rng);
    }
  }
  adapter.max_rank = rank;
  return adapter;
}

// s * B A of one module, or zeros where the adapter lacks it.
Matrix Delta(const LoraAdapter& adapter, int layer, Module m) {
  const ModuleDims dims = TinyBase().Dims(m);
  const auto& w = adapter.modules[layer][static_cast<int>(m)];
  if (!w.has_value()) return Matrix::Zero(dims.out, dims.in);
  Matrix a(w->rank, dims.in), b(dims.out, w->rank);
  for (int r = 0; r < w->rank; ++r) {
    for (int i = 0; i < dims.in; ++i) a(r, i) = w->a[static_cast<size_t>(r) * dims.in + i];
    for (int o = 0; o < dims.out; ++o) b(o, r) = w->b[static_cast<size_t>(o) * w->rank + r];
  }
  return b * a * static_cast<double>(w->scaling);
}

double RelativeError(const Matrix& got, const Matrix& want) {
  return (got - want).cwiseAbs().maxCoeff() / std::max(want.cwiseAbs().maxCoeff(), 1e-30);
}

constexpr Module kAll[] = {Module::kQ,    Module::kK,  Module::kV,   Module::kO,
                           Module::kGate, Module::kUp, Module::kDown};

FuseOptions Options(FuseCombination combination, std::optional<int> svd_rank = std::nullopt,
                    std::optional<double> density = std::nullopt) {
  FuseOptions options;
  options.combination = combination;
  options.svd_rank = svd_rank;
  options.density = density;
  return options;
}

TEST(FusionTest, CatIsTheExactWeightedSumOfDeltas) {
  const LoraAdapter a = RandomAdapter("a", 4, 2.0f, {Module::kQ, Module::kV}, 1);
  const LoraAdapter b = RandomAdapter("b", 8, 0.5f, {Module::kQ, Module::kK, Module::kDown}, 2);
  const FuseSource sources[] = {{&a, 0.6}, {&b, -0.4}};
  auto fused = FuseAdapters("ab", sources, Options(FuseCombination::kCat));
  ASSERT_TRUE(fused.ok()) << fused.status();
  EXPECT_EQ(fused->config.r, 12);
  for (int layer = 0; layer < 2; ++layer) {
    for (Module m : kAll) {
      const Matrix want = 0.6 * Delta(a, layer, m) - 0.4 * Delta(b, layer, m);
      EXPECT_LT(RelativeError(Delta(*fused, layer, m), want), 1e-6)
          << "layer " << layer << " module " << kModuleNames[static_cast<int>(m)];
    }
  }
  // Only q carries both sources' ranks.
  EXPECT_EQ(fused->modules[0][static_cast<int>(Module::kQ)]->rank, 12);
  EXPECT_EQ(fused->modules[0][static_cast<int>(Module::kV)]->rank, 4);
  EXPECT_FALSE(fused->modules[0][static_cast<int>(Module::kUp)].has_value());
}

TEST(FusionTest, LinearMergesFactorsWithSqrtWeights) {
  const LoraAdapter a = RandomAdapter("a", 4, 2.0f, {Module::kQ}, 3);
  const LoraAdapter b = RandomAdapter("b", 4, 0.5f, {Module::kQ}, 4);
  const FuseSource sources[] = {{&a, 0.7}, {&b, 0.3}};
  auto fused = FuseAdapters("ab", sources, Options(FuseCombination::kLinear));
  ASSERT_TRUE(fused.ok()) << fused.status();
  const auto& wa = *a.modules[1][0];
  const auto& wb = *b.modules[1][0];
  const auto& wf = *fused->modules[1][0];
  const double ca = std::sqrt(0.7 * 2.0), cb = std::sqrt(0.3 * 0.5);
  for (size_t i = 0; i < wf.a.size(); ++i) {
    EXPECT_NEAR(wf.a[i], ca * wa.a[i] + cb * wb.a[i], 1e-5);
  }
  for (size_t i = 0; i < wf.b.size(); ++i) {
    EXPECT_NEAR(wf.b[i], ca * wa.b[i] + cb * wb.b[i], 1e-5);
  }
  EXPECT_EQ(wf.scaling, 1.0f);
}

TEST(FusionTest, LinearRejectsMixedRanksAndNegativeWeights) {
  const LoraAdapter a = RandomAdapter("a", 4, 1.0f, {Module::kQ}, 5);
  const LoraAdapter b = RandomAdapter("b", 8, 1.0f, {Module::kQ}, 6);
  const FuseSource mixed[] = {{&a, 0.5}, {&b, 0.5}};
  auto fused = FuseAdapters("x", mixed, Options(FuseCombination::kLinear));
  EXPECT_EQ(fused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(fused.status().message().find("use cat"), std::string_view::npos);
  const FuseSource negative[] = {{&a, 0.5}, {&a, -0.5}};
  EXPECT_FALSE(FuseAdapters("x", negative, Options(FuseCombination::kLinear)).ok());
}

TEST(FusionTest, SvdAtFullRankReproducesCatAndBothSvdPathsAgree) {
  const LoraAdapter a = RandomAdapter("a", 4, 2.0f, {Module::kQ, Module::kDown}, 7);
  const LoraAdapter b = RandomAdapter("b", 6, 0.5f, {Module::kQ, Module::kUp}, 8);
  const FuseSource sources[] = {{&a, 0.6}, {&b, 0.4}};
  // Low-rank QR path at rank 10 = 4 + 6: exact.
  auto svd = FuseAdapters("s", sources, Options(FuseCombination::kSvd, 10));
  ASSERT_TRUE(svd.ok()) << svd.status();
  for (Module m : {Module::kQ, Module::kDown, Module::kUp}) {
    const Matrix want = 0.6 * Delta(a, 0, m) + 0.4 * Delta(b, 0, m);
    EXPECT_LT(RelativeError(Delta(*svd, 0, m), want), 1e-5);
  }
  // Truncated: the full-delta path (magnitude_prune_svd at density 1 prunes nothing) must give the
  // same best rank-3 approximation, which is also the Eckart-Young optimum.
  auto low = FuseAdapters("s3", sources, Options(FuseCombination::kSvd, 3));
  auto full = FuseAdapters("f3", sources, Options(FuseCombination::kMagnitudePruneSvd, 3, 1.0));
  ASSERT_TRUE(low.ok() && full.ok());
  const Matrix want = 0.6 * Delta(a, 0, Module::kQ) + 0.4 * Delta(b, 0, Module::kQ);
  EXPECT_LT(RelativeError(Delta(*low, 0, Module::kQ), Delta(*full, 0, Module::kQ)), 1e-6);
  Eigen::JacobiSVD<Matrix> reference(want, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Matrix best = reference.matrixU().leftCols(3) *
                      reference.singularValues().head(3).asDiagonal() *
                      reference.matrixV().leftCols(3).transpose();
  EXPECT_LT(RelativeError(Delta(*low, 0, Module::kQ), best), 1e-5);
  EXPECT_EQ(low->modules[0][0]->rank, 3);
}

TEST(FusionTest, SvdClampBoundsEveryFactorValue) {
  const LoraAdapter a = RandomAdapter("a", 4, 1.0f, {Module::kQ}, 9);
  const LoraAdapter b = RandomAdapter("b", 4, 1.0f, {Module::kQ}, 10);
  const FuseSource sources[] = {{&a, 1.0}, {&b, 1.0}};
  FuseOptions options = Options(FuseCombination::kSvd);
  options.svd_clamp = 0.5;
  auto clamped = FuseAdapters("c", sources, options);
  ASSERT_TRUE(clamped.ok());
  const auto& w = *clamped->modules[0][0];
  float hi = 0;
  for (float v : w.a) hi = std::max(hi, std::abs(v));
  for (float v : w.b) hi = std::max(hi, std::abs(v));
  int at_bound = 0;
  for (float v : w.a) at_bound += std::abs(std::abs(v) - hi) < 1e-7;
  EXPECT_GT(at_bound,
            1);  // the 0.5 quantile clips a good share of values to +-hi
}

TEST(FusionTest, TiesOfIdenticalSourcesIsTheSource) {
  const LoraAdapter a = RandomAdapter("a", 4, 1.0f, {Module::kV}, 11);
  const FuseSource sources[] = {{&a, 1.0}, {&a, 1.0}, {&a, 1.0}};
  auto fused = FuseAdapters("t", sources, Options(FuseCombination::kTies, std::nullopt, 1.0));
  ASSERT_TRUE(fused.ok()) << fused.status();
  EXPECT_LT(RelativeError(Delta(*fused, 1, Module::kV), Delta(a, 1, Module::kV)), 1e-6);
  // Pruning to 25% keeps exactly int(0.25 * n) values of each factor.
  auto pruned = FuseAdapters("t", sources, Options(FuseCombination::kTies, std::nullopt, 0.25));
  ASSERT_TRUE(pruned.ok());
  const auto& w = *pruned->modules[1][static_cast<int>(Module::kV)];
  EXPECT_EQ(std::count_if(w.a.begin(), w.a.end(), [](float v) { return v != 0; }),
            static_cast<int64_t>(0.25 * w.a.size()));
}

TEST(FusionTest, DareKeepsDensityFractionRescaledAndIsSeeded) {
  const LoraAdapter a =
      RandomAdapter("a", 8, 1.0f, std::vector<Module>(std::begin(kAll), std::end(kAll)), 12);
  const LoraAdapter zero = RandomAdapter("z", 8, 1.0f, {Module::kQ}, 13);
  // weight 0 for the second source: the result is sqrt(1 * 1) * the pruned first source.
  const FuseSource sources[] = {{&a, 1.0}, {&zero, 0.0}};
  FuseOptions options = Options(FuseCombination::kDareLinear, std::nullopt, 0.3);
  options.seed = 42;
  auto fused = FuseAdapters("d", sources, options);
  ASSERT_TRUE(fused.ok()) << fused.status();
  size_t kept = 0, total = 0;
  for (int layer = 0; layer < 2; ++layer) {
    for (Module m : {Module::kK, Module::kUp}) {  // modules the zero-weight source lacks
      const auto& src = *a.modules[layer][static_cast<int>(m)];
      const auto& got = *fused->modules[layer][static_cast<int>(m)];
      for (size_t i = 0; i < got.a.size(); ++i) {
        ++total;
        if (got.a[i] == 0) continue;
        ++kept;
        EXPECT_NEAR(got.a[i], src.a[i] / 0.3, 1e-5);
      }
    }
  }
  EXPECT_NEAR(static_cast<double>(kept) / total, 0.3, 0.03);
  auto again = FuseAdapters("d", sources, options);
  FuseOptions other = options;
  other.seed = 43;
  auto reseeded = FuseAdapters("d", sources, other);
  ASSERT_TRUE(again.ok() && reseeded.ok());
  EXPECT_EQ(again->modules[0][0]->a, fused->modules[0][0]->a);
  EXPECT_NE(reseeded->modules[0][0]->a, fused->modules[0][0]->a);
}

TEST(FusionTest, RejectsBadOptions) {
  const LoraAdapter a = RandomAdapter("a", 4, 1.0f, {Module::kQ}, 14);
  const FuseSource two[] = {{&a, 0.5}, {&a, 0.5}};
  auto no_density = FuseAdapters("x", two, Options(FuseCombination::kDareTies));
  EXPECT_NE(no_density.status().message().find("density"), std::string_view::npos);
  EXPECT_FALSE(FuseAdapters("x", two, Options(FuseCombination::kTies, std::nullopt, 1.5)).ok());
  EXPECT_FALSE(FuseAdapters("x", {}, {}).ok());
  LoraAdapter dora = a;
  dora.use_dora = true;
  const FuseSource with_dora[] = {{&a, 0.5}, {&dora, 0.5}};
  EXPECT_NE(FuseAdapters("x", with_dora, {}).status().message().find("DoRA"),
            std::string_view::npos);
  EXPECT_FALSE(ParseFuseCombination("average").ok());
  EXPECT_EQ(*ParseFuseCombination("dare_ties_svd"), FuseCombination::kDareTiesSvd);
}

TEST(PeftWriterTest, FusedAdapterRoundTripsThroughTheParser) {
  const LoraAdapter a = RandomAdapter("a", 4, 2.0f, {Module::kQ, Module::kV}, 15);
  const LoraAdapter b = RandomAdapter("b", 8, 0.5f, {Module::kQ}, 16);
  const FuseSource sources[] = {{&a, 0.6}, {&b, 0.4}};
  auto fused = FuseAdapters("ab", sources, Options(FuseCombination::kCat));
  ASSERT_TRUE(fused.ok());
  auto files = SerializePeftAdapter(*fused);
  ASSERT_TRUE(files.ok()) << files.status();
  auto weights = SafetensorsFile::FromBuffer(files->at(kAdapterWeightsFile), kAdapterWeightsFile);
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto parsed =
      ParsePeftAdapter("ab", files->at(kAdapterConfigFile), **weights, TinyBase(), AdapterLimits{});
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << files->at(kAdapterConfigFile);
  for (int layer = 0; layer < 2; ++layer) {
    for (int m = 0; m < kNumModules; ++m) {
      const auto& want = fused->modules[layer][m];
      const auto& got = parsed->modules[layer][m];
      ASSERT_EQ(want.has_value(), got.has_value());
      if (!want.has_value()) continue;
      EXPECT_EQ(got->rank, want->rank);  // 12 for q, 4 for v: via rank_pattern
      EXPECT_EQ(got->scaling, want->scaling);
      EXPECT_EQ(got->a, want->a);
      EXPECT_EQ(got->b, want->b);
    }
  }
}

}  // namespace
}  // namespace loraserve
