// LoraApply against the scalar reference on random paged adapters: decode and prefill segments,
// mixed ranks (1 to 512 in one call), weighted sets, DoRA out_scale, odd dimensions,
// fp32/bf16/fp16 rows (mixed in one weighted set too); AVX-512, AVX2 and portable micro-kernels,
// and both sides of the BGMV/SGMV threshold.
#include "kernels/cpu/lora.h"


#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "formats/half.h"
#include "kernels/cpu/lora_microkernels.h"

namespace loraserve::kernels {
namespace {

struct SegmentSpec {
  int rows;
  std::vector<std::pair<int, float>> adapters;  // (adapter index, request weight)
  bool dora = false;
};

// A pool whose rank rows sit in shuffled fixed-size cells, like the runtime's paged pool.
struct Problem {
  int in_dim = 0, out_dim = 0, rows = 0;
  int64_t ldx = 0, ldy = 0;
  std::vector<float> pool, x, y;
  std::vector<int> ranks;
  std::vector<std::vector<int64_t>> a_rows, b_cols;  // per adapter
  std::vector<std::vector<float>> out_scales;        // per segment (empty = none)
  std::vector<LoraRef> refs;
  std::vector<LoraSegment> segments;
};

// Random bits of a 16-bit float type in [2^-9, 2) in magnitude, plus fp16 subnormals.
uint16_t RandomHalfBits(LoraDtype dtype, std::mt19937& rng) {
  const uint32_t r = rng();
  const uint16_t sign = (r & 1u) << 15;
  if (dtype == LoraDtype::kBF16) {
    const uint16_t exponent = 118 + (r >> 1) % 10;  // 2^-9 .. 2^0
    return sign | static_cast<uint16_t>(exponent << 7) | static_cast<uint16_t>((r >> 8) & 0x7f);
  }
  const uint16_t exponent = (r >> 1) % 17;  // 0 (subnormal) .. 2^1
  return sign | static_cast<uint16_t>(exponent << 10) | static_cast<uint16_t>((r >> 8) & 0x3ff);
}

// Rows of a 16-bit adapter hold random 16-bit values packed two per float cell slot.
void FillRow(std::vector<float>& pool, int64_t offset, int length, LoraDtype dtype,
             std::mt19937& rng) {
  if (dtype == LoraDtype::kF32) return;  // keeps the uniform floats already there
  std::vector<uint16_t> bits(length);
  for (uint16_t& b : bits) b = RandomHalfBits(dtype, rng);
  std::memcpy(pool.data() + offset, bits.data(), bits.size() * sizeof(uint16_t));
}

Problem MakeProblem(int in_dim, int out_dim, const std::vector<int>& ranks,
                    const std::vector<SegmentSpec>& specs, uint32_t seed,
                    const std::vector<LoraDtype>& dtypes = {}) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  Problem p;
  p.in_dim = in_dim;
  p.out_dim = out_dim;
  p.ldx = in_dim + 3;  // leading dimensions wider than the rows
  p.ldy = out_dim + 5;
  p.ranks = ranks;
  const int64_t cell = std::max(in_dim, out_dim) + 1;
  const int cells = 2 * std::accumulate(ranks.begin(), ranks.end(), 0);
  std::vector<int64_t> order(cells);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  p.pool.resize(cells * cell);
  for (float& v : p.pool) v = uniform(rng);
  int next = 0;
  auto dtype_of = [&](size_t adapter) {
    return dtypes.empty() ? LoraDtype::kF32 : dtypes[adapter];
  };
  for (size_t adapter = 0; adapter < ranks.size(); ++adapter) {
    p.a_rows.emplace_back();
    p.b_cols.emplace_back();
    for (int k = 0; k < ranks[adapter]; ++k) {
      p.a_rows.back().push_back(order[next++] * cell);
      p.b_cols.back().push_back(order[next++] * cell);
      FillRow(p.pool, p.a_rows.back().back(), in_dim, dtype_of(adapter), rng);
      FillRow(p.pool, p.b_cols.back().back(), out_dim, dtype_of(adapter), rng);
    }
  }
  for (const SegmentSpec& spec : specs) p.rows += spec.rows;
  p.x.resize(p.rows * p.ldx);
  p.y.resize(p.rows * p.ldy);
  for (float& v : p.x) v = uniform(rng);
  for (float& v : p.y) v = uniform(rng);
  p.out_scales.resize(specs.size());
  int row = 0;
  for (size_t s = 0; s < specs.size(); ++s) {
    const int refs_begin = static_cast<int>(p.refs.size());
    for (auto [adapter, weight] : specs[s].adapters) {
      const float alpha_over_r = 2.0f / ranks[adapter];
      p.refs.push_back({ranks[adapter], weight * alpha_over_r, p.a_rows[adapter].data(),
                        p.b_cols[adapter].data(), dtype_of(adapter)});
    }
    if (specs[s].dora) {
      p.out_scales[s].resize(out_dim);
      for (float& v : p.out_scales[s]) v = 0.5f + std::abs(uniform(rng));
    }
    p.segments.push_back({row, row + specs[s].rows, refs_begin, static_cast<int>(p.refs.size()),
                          specs[s].dora ? p.out_scales[s].data() : nullptr});
    row += specs[s].rows;
  }
  return p;
}

std::vector<float> RunReference(const Problem& p) {
  std::vector<float> y = p.y;
  LoraApplyReference(p.pool.data(), p.x.data(), p.ldx, y.data(), p.ldy, p.in_dim, p.out_dim,
                     p.segments, p.refs);
  return y;
}

// Per row: max |got - want| <= 1e-5 * max |want|; padding between rows must be untouched.
void ExpectRowsNear(const Problem& p, const std::vector<float>& got,
                    const std::vector<float>& want) {
  for (int r = 0; r < p.rows; ++r) {
    float max_want = 0.0f, max_err = 0.0f;
    for (int j = 0; j < p.out_dim; ++j) {
      max_want = std::max(max_want, std::abs(want[r * p.ldy + j]));
      max_err = std::max(max_err, std::abs(got[r * p.ldy + j] - want[r * p.ldy + j]));
    }
    EXPECT_LE(max_err, 1e-5f * max_want) << "row " << r;
    for (int64_t j = p.out_dim; j < p.ldy; ++j)
      EXPECT_EQ(got[r * p.ldy + j], p.y[r * p.ldy + j]) << "padding of row " << r;
  }
}

struct Variant {
  const char* name;
  detail::LoraApplyOptions options;
};

class LoraApplyTest : public testing::TestWithParam<Variant> {
 protected:
  std::vector<float> Run(const Problem& p) {
    std::vector<float> y = p.y;
    detail::LoraApply(p.pool.data(), p.x.data(), p.ldx, y.data(), p.ldy, p.in_dim, p.out_dim,
                      p.segments, p.refs, GetParam().options);
    return y;
  }
  void ExpectMatchesReference(const Problem& p) { ExpectRowsNear(p, Run(p), RunReference(p)); }
};

TEST_P(LoraApplyTest, DecodeRowsWithMixedRanksWeightedSetsAndDora) {
  const std::vector<int> ranks = {1, 4, 8, 16, 64, 3};
  std::vector<SegmentSpec> specs;
  for (int i = 0; i < 24; ++i) {
    SegmentSpec spec{1, {{i % 6, 1.0f}}, i % 5 == 0};
    if (i % 4 == 1) spec.adapters.push_back({(i + 2) % 6, -0.5f});      // weighted pair
    if (i % 7 == 3) spec.adapters = {{0, 0.2f}, {2, 0.3f}, {4, 0.5f}};  // weighted triple
    if (i % 9 == 8) spec.adapters.clear();                              // base-only
    specs.push_back(spec);
  }
  ExpectMatchesReference(MakeProblem(101, 77, ranks, specs, 1));
}

TEST_P(LoraApplyTest, PrefillSegmentsWithWeightedSetsAndDora) {
  const std::vector<int> ranks = {8, 16, 64, 5};
  const std::vector<SegmentSpec> specs = {
      {70, {{0, 1.0f}}},       {130, {{1, 0.7f}, {2, 0.3f}}, true},
      {5, {{3, 1.0f}}},        {1, {{2, 1.0f}, {3, 1.0f}, {0, -1.0f}}, true},
      {64, {{2, 1.0f}}, true}, {66, {}},
  };
  ExpectMatchesReference(MakeProblem(136, 200, ranks, specs, 2));
}

TEST_P(LoraApplyTest, OneAdapterAcrossManyRows) {
  ExpectMatchesReference(MakeProblem(512, 384, {16}, {{63, {{0, 1.0f}}}}, 3));
}

TEST_P(LoraApplyTest, Rank1AndRank64) {
  const std::vector<SegmentSpec> specs = {{1, {{0, 1.0f}}}, {3, {{1, 1.0f}}}, {9, {{0, 0.5f}}}};
  ExpectMatchesReference(MakeProblem(64, 64, {1, 64}, specs, 4));
}

// Rank 512 next to rank 1 and 8 in one call, prefill (SGMV) and decode (BGMV) segments, rank
// above both dimensions as PEFT allows: every segment's rows come out bit-identical to that
// segment run alone, so a large adapter neither pads nor perturbs a small one.
TEST_P(LoraApplyTest, Ranks1And8And512InOneBatchEqualEachSegmentAlone) {
  const std::vector<int> ranks = {1, 8, 512};
  const std::vector<SegmentSpec> specs = {
      {70, {{2, 1.0f}}},
      {1, {{0, 1.0f}}},
      {1, {{1, 1.0f}}},
      {1, {{2, 1.0f}}},
      {66, {{0, 1.0f}}},
      {3, {{1, 1.0f}}},
      {64, {{1, 1.0f}}, true},
      {2, {}},
      {2, {{0, 0.5f}, {2, 0.5f}}},
      {5, {{2, 1.0f}, {1, -1.0f}}, true},
  };
  const Problem p = MakeProblem(96, 80, ranks, specs, 14);
  const std::vector<float> batched = Run(p);
  ExpectRowsNear(p, batched, RunReference(p));
  for (size_t seg = 0; seg < p.segments.size(); ++seg) {
    Problem alone = p;
    alone.segments = {p.segments[seg]};
    const std::vector<float> solo = Run(alone);
    const LoraSegment& s = p.segments[seg];
    EXPECT_EQ(0,
              std::memcmp(batched.data() + s.row_begin * p.ldy, solo.data() + s.row_begin * p.ldy,
                          (s.row_end - s.row_begin) * p.ldy * sizeof(float)))
        << "segment " << seg;
  }
}

// q/k/v as one fused call: three modules with different widths, ranks and segment tables over
// one x; each module's output is bit-identical to LoraApply on it alone.
TEST_P(LoraApplyTest, FusedModulesEqualEachModuleAlone) {
  const std::vector<SegmentSpec> q_specs = {
      {1, {{0, 1.0f}}}, {1, {{1, 0.5f}, {2, -0.5f}}, true}, {70, {{2, 1.0f}}}, {2, {}}};
  const std::vector<SegmentSpec> v_specs = {
      {1, {{1, 1.0f}}}, {1, {}}, {70, {{0, 1.0f}, {1, 1.0f}}}, {2, {{2, 2.0f}}, true}};
  // Moved in, not copied from an initializer list: a Problem's refs point into its own vectors.
  std::vector<Problem> modules;
  modules.push_back(MakeProblem(96, 120, {8, 16, 4}, q_specs, 21));
  modules.push_back(MakeProblem(96, 40, {4, 8, 64}, v_specs, 22));
  modules.push_back(MakeProblem(96, 40, {16}, {{74, {}}}, 23));  // no LoRA rows
  for (Problem& m : modules) m.x = modules[0].x;  // one input, as q/k/v share h
  std::vector<std::vector<float>> fused;
  std::vector<LoraTarget> targets;
  // One pool for all three: append each module's pool and rebase its offsets.
  std::vector<float> pool;
  std::vector<std::vector<int64_t>> rebased_a, rebased_b;
  std::vector<std::vector<LoraRef>> refs(modules.size());
  for (size_t m = 0; m < modules.size(); ++m) {
    const int64_t base = static_cast<int64_t>(pool.size());
    pool.insert(pool.end(), modules[m].pool.begin(), modules[m].pool.end());
    for (LoraRef ref : modules[m].refs) {
      rebased_a.emplace_back(ref.a_rows, ref.a_rows + ref.rank);
      rebased_b.emplace_back(ref.b_cols, ref.b_cols + ref.rank);
      for (int64_t& o : rebased_a.back()) o += base;
      for (int64_t& o : rebased_b.back()) o += base;
      refs[m].push_back(ref);
    }
  }
  size_t next = 0;
  for (size_t m = 0; m < modules.size(); ++m) {
    for (LoraRef& ref : refs[m]) {
      ref.a_rows = rebased_a[next].data();
      ref.b_cols = rebased_b[next].data();
      ++next;
    }
  }
  fused.resize(modules.size());
  for (size_t m = 0; m < modules.size(); ++m) {
    fused[m] = modules[m].y;
    targets.push_back({fused[m].data(), modules[m].ldy, modules[m].out_dim, modules[m].segments,
                       refs[m]});
  }
  detail::LoraApplyFused(pool.data(), modules[0].x.data(), modules[0].ldx, 96, targets,
                         GetParam().options);
  for (size_t m = 0; m < modules.size(); ++m) {
    EXPECT_EQ(fused[m], Run(modules[m])) << "module " << m;
  }
  EXPECT_EQ(fused[2], modules[2].y);  // base-only rows without out_scale are left alone
}

TEST_P(LoraApplyTest, DimensionsSmallerThanOneVector) {
  const std::vector<SegmentSpec> specs = {{2, {{0, 1.0f}}, true}, {5, {{1, 1.0f}, {0, 2.0f}}}};
  ExpectMatchesReference(MakeProblem(5, 3, {2, 7}, specs, 5));
}

TEST_P(LoraApplyTest, SixteenBitRowsAndMixedDtypeWeightedSets) {
  const std::vector<int> ranks = {8, 16, 5, 3, 32, 1};
  const std::vector<LoraDtype> dtypes = {LoraDtype::kBF16, LoraDtype::kF16, LoraDtype::kF32,
                                         LoraDtype::kBF16, LoraDtype::kF16, LoraDtype::kF32};
  const std::vector<SegmentSpec> specs = {
      {1, {{0, 1.0f}}},
      {1, {{1, 1.0f}}, true},
      {3, {{0, 0.5f}, {1, 0.25f}, {2, -1.0f}}, true},  // bf16 + fp16 + fp32 in one set
      {2, {{3, 1.0f}, {0, 1.0f}}},                     // two bf16 refs form one run
      {70, {{4, 1.0f}}},                               // SGMV over fp16
      {65, {{1, 0.5f}, {3, 0.5f}}, true},              // SGMV, mixed, DoRA
      {9, {{5, 1.0f}, {4, 1.0f}}},
      {4, {}},
  };
  // 517 and 203: tails after the vector loops, and odd lengths that end mid-cell.
  ExpectMatchesReference(MakeProblem(517, 203, ranks, specs, 11, dtypes));
  for (LoraDtype dtype : {LoraDtype::kBF16, LoraDtype::kF16}) {
    const std::vector<SegmentSpec> decode = {{1, {{0, 1.0f}}}, {5, {{0, 2.0f}}}};
    ExpectMatchesReference(MakeProblem(4096, 64, {16}, decode, 12, {dtype}));
  }
}

// A bf16/fp16 file kept 16-bit in the pool must compute exactly what its fp32 copy computes:
// same values, same fp32 arithmetic, also in the scalar tails (72 and 40 are not multiples of 16).
TEST_P(LoraApplyTest, SixteenBitRowsAreBitIdenticalToTheirFp32Copies) {
  for (LoraDtype dtype : {LoraDtype::kBF16, LoraDtype::kF16}) {
    const std::vector<SegmentSpec> specs = {{3, {{0, 1.0f}}, true}, {70, {{0, 0.5f}}}};
    const Problem narrow = MakeProblem(72, 40, {8}, specs, 13, {dtype});
    Problem wide = narrow;
    for (auto& ref : wide.refs) ref.dtype = LoraDtype::kF32;
    for (int k = 0; k < 8; ++k) {
      for (auto [offset, length] : {std::pair{narrow.a_rows[0][k], 72},
                                    std::pair{narrow.b_cols[0][k], 40}}) {
        for (int i = 0; i < length; ++i) {
          wide.pool[offset + i] = dtype == LoraDtype::kBF16
                                      ? lora_internal::LoadElement<LoraDtype::kBF16>(
                                            narrow.pool.data() + offset, i)
                                      : lora_internal::LoadElement<LoraDtype::kF16>(
                                            narrow.pool.data() + offset, i);
        }
      }
    }
    EXPECT_EQ(Run(narrow), Run(wide)) << static_cast<int>(dtype);
  }
}

TEST_P(LoraApplyTest, EmptySegmentListLeavesOutputBitIdentical) {
  const Problem p = MakeProblem(40, 24, {4}, {{6, {{0, 1.0f}}}}, 6);
  std::vector<float> y = p.y;
  detail::LoraApply(p.pool.data(), p.x.data(), p.ldx, y.data(), p.ldy, p.in_dim, p.out_dim, {},
                    p.refs, GetParam().options);
  EXPECT_EQ(0, std::memcmp(y.data(), p.y.data(), y.size() * sizeof(float)));
}

TEST_P(LoraApplyTest, BaseOnlyRowsWithoutOutScaleStayBitIdentical) {
  const std::vector<SegmentSpec> specs = {
      {3, {{0, 1.0f}}}, {4, {}}, {1, {{1, 1.0f}}}, {80, {}}, {70, {{0, 1.0f}}}};
  Problem p = MakeProblem(48, 40, {4, 16}, specs, 7);
  p.segments.push_back({p.rows, p.rows, 0, 1, nullptr});  // an empty row range is ignored too
  const std::vector<float> got = Run(p);
  ExpectRowsNear(p, got, RunReference(p));
  for (int seg : {1, 3}) {
    const LoraSegment& s = p.segments[seg];
    const size_t bytes = (s.row_end - s.row_begin) * p.ldy * sizeof(float);
    EXPECT_EQ(
        0, std::memcmp(got.data() + s.row_begin * p.ldy, p.y.data() + s.row_begin * p.ldy, bytes))
        << "segment " << seg;
  }
}

TEST_P(LoraApplyTest, BaseOnlyRowsWithOutScaleAreScaledExactly) {
  Problem p = MakeProblem(16, 33, {4}, {{2, {}, true}, {100, {}, true}}, 8);
  const std::vector<float> got = Run(p);
  EXPECT_EQ(got, RunReference(p));  // one float multiply per element: exact
}

// On a CPU without AVX-512 (or AVX2) the wider variants fall back and rerun a narrower path.
const Variant kVariants[] = {
    {"Avx512", {}},
    {"Avx2", {.allow_avx512 = false}},
    {"Portable", {.allow_avx512 = false, .allow_avx2 = false}},
    {"Avx512BgmvOnly", {.sgmv_min_rows = INT_MAX}},
    {"Avx2BgmvOnly", {.allow_avx512 = false, .sgmv_min_rows = INT_MAX}},
    {"PortableBgmvOnly", {.allow_avx512 = false, .allow_avx2 = false, .sgmv_min_rows = INT_MAX}},
    {"Avx512SgmvOnly", {.sgmv_min_rows = 1}},
    {"Avx2SgmvOnly", {.allow_avx512 = false, .sgmv_min_rows = 1}},
    // Rank chunks of 3: every chunk boundary falls inside a tile and inside a weighted set.
    {"Avx512SgmvRankChunks3", {.sgmv_min_rows = 1, .sgmv_task_ranks = 3}},
};

INSTANTIATE_TEST_SUITE_P(Paths, LoraApplyTest, testing::ValuesIn(kVariants),
                         [](const testing::TestParamInfo<Variant>& info) {
                           return std::string(info.param.name);
                         });

TEST(LoraApplyPublicTest, MatchesReference) {
  const std::vector<SegmentSpec> specs = {{1, {{0, 1.0f}}}, {90, {{1, 1.0f}, {0, 0.5f}}, true}};
  const Problem p = MakeProblem(256, 160, {16, 8}, specs, 9);
  std::vector<float> y = p.y;
  LoraApply(p.pool.data(), p.x.data(), p.ldx, y.data(), p.ldy, p.in_dim, p.out_dim, p.segments,
            p.refs);
  ExpectRowsNear(p, y, RunReference(p));
}

TEST(LoraApplyPublicTest, ReportsTheCpusVectorExtensions) {
  EXPECT_EQ(detail::CpuHasAvx2Fma(), __builtin_cpu_supports("avx2") &&
                                         __builtin_cpu_supports("fma") &&
                                         __builtin_cpu_supports("f16c"));
  EXPECT_EQ(detail::CpuHasAvx512(), static_cast<bool>(__builtin_cpu_supports("avx512f")));
}

TEST(LoraElementTest, F16BitsConvertExactly) {
  EXPECT_EQ(F16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(F16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(F16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(F16ToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7e00)));
  EXPECT_TRUE(std::signbit(F16ToFloat(0x8000)));
}

TEST(NaivePerRequestLoraTest, MatchesReferenceOnDenseCopies) {
  const std::vector<int> ranks = {4, 16};
  std::vector<SegmentSpec> specs;
  for (int i = 0; i < 7; ++i) specs.push_back({1, {{i % 2, 1.0f}}});
  specs.push_back({1, {}});
  const Problem p = MakeProblem(72, 40, ranks, specs, 10);
  std::vector<std::vector<float>> a(2), b(2);
  std::vector<DenseLora> dense;
  for (int ad = 0; ad < 2; ++ad) {
    const int r = ranks[ad];
    a[ad].resize(r * p.in_dim);
    b[ad].resize(p.out_dim * r);
    for (int k = 0; k < r; ++k) {
      for (int i = 0; i < p.in_dim; ++i) a[ad][k * p.in_dim + i] = p.pool[p.a_rows[ad][k] + i];
      for (int j = 0; j < p.out_dim; ++j) b[ad][j * r + k] = p.pool[p.b_cols[ad][k] + j];
    }
    dense.push_back({r, 2.0f / r, a[ad].data(), b[ad].data()});
  }
  std::vector<int> row_adapter = {0, 1, 0, 1, 0, 1, 0, -1};
  std::vector<float> y = p.y;
  NaivePerRequestLora(p.x.data(), p.ldx, y.data(), p.ldy, p.in_dim, p.out_dim, row_adapter, dense);
  ExpectRowsNear(p, y, RunReference(p));
}

}  // namespace
}  // namespace loraserve::kernels
