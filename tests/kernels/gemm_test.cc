// LinearForward against a double-precision reference on both of its paths (micro-kernels for
// decode-sized batches, OpenBLAS for larger ones), for fp32, bf16 and fp16 weights: row counts around the tile and threshold
// edges, dimensions with vector tails, padded leading dimensions, accumulate on and off.
#include "kernels/cpu/gemm.h"

#include "formats/half.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace loraserve::kernels {
namespace {

struct Case {
  int rows, in, out;
};

// The weight is drawn, then rounded to `dtype` when that is 16-bit; the reference multiplies by
// the rounded values widened to double, so a 16-bit path is held to the fp32 tolerance.
void ExpectMatchesReference(const Case& c, bool accumulate, const detail::LinearOptions& options,
                            LoraDtype dtype) {
  std::mt19937 rng(c.rows * 1000 + c.in + c.out);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const int64_t ldx = c.in + 3, ldy = c.out + 5;
  std::vector<float> x(c.rows * ldx), w(static_cast<size_t>(c.out) * c.in), y(c.rows * ldy);
  for (float& v : x) v = uniform(rng);
  for (float& v : w) v = uniform(rng);
  for (float& v : y) v = uniform(rng);
  std::vector<uint16_t> bits(w.size());
  for (size_t i = 0; i < w.size() && dtype != LoraDtype::kF32; ++i) {
    bits[i] = dtype == LoraDtype::kBF16 ? FloatToBf16(w[i]) : FloatToF16(w[i]);
    w[i] = dtype == LoraDtype::kBF16 ? Bf16ToFloat(bits[i]) : F16ToFloat(bits[i]);
  }
  const void* stored = dtype == LoraDtype::kF32 ? static_cast<const void*>(w.data()) : bits.data();
  std::vector<float> got = y;
  detail::LinearForward(x.data(), ldx, stored, dtype, c.rows, c.in, c.out, got.data(), ldy,
                        accumulate, options);
  for (int r = 0; r < c.rows; ++r) {
    double max_err = 0, max_want = 0;
    for (int o = 0; o < c.out; ++o) {
      double want = accumulate ? y[r * ldy + o] : 0.0;
      for (int i = 0; i < c.in; ++i) {
        want += static_cast<double>(x[r * ldx + i]) * w[static_cast<size_t>(o) * c.in + i];
      }
      max_err = std::max(max_err, std::abs(got[r * ldy + o] - want));
      max_want = std::max(max_want, std::abs(want));
    }
    EXPECT_LE(max_err, 1e-5 * max_want) << "row " << r;
    for (int64_t o = c.out; o < ldy; ++o) {
      EXPECT_EQ(got[r * ldy + o], y[r * ldy + o]) << "padding of row " << r;
    }
  }
}

struct Variant {
  const char* name;
  detail::LinearOptions options;
};

class LinearForwardTest : public testing::TestWithParam<Variant> {};

TEST_P(LinearForwardTest, MatchesReference) {
  const detail::LinearOptions& options = GetParam().options;
  for (const Case& c : {Case{1, 64, 64}, Case{1, 517, 203}, Case{2, 768, 256}, Case{3, 100, 70},
                        Case{5, 1030, 129}, Case{16, 64, 172}, Case{63, 172, 64},
                        Case{64, 257, 96}, Case{65, 64, 80}, Case{100, 33, 17},
                        Case{513, 40, 24}}) {
    for (bool accumulate : {false, true}) {
      for (LoraDtype dtype : {LoraDtype::kF32, LoraDtype::kBF16, LoraDtype::kF16}) {
        SCOPED_TRACE(testing::Message() << c.rows << "x" << c.in << "->" << c.out
                                        << (accumulate ? " accumulate" : "") << " dtype "
                                        << static_cast<int>(dtype));
        ExpectMatchesReference(c, accumulate, options, dtype);
      }
    }
  }
}

// On a CPU without AVX-512 (or AVX2) the wider variants fall back and rerun a narrower path.
const Variant kVariants[] = {
    {"Default", {}},
    {"OpenBlasOnly", {.micro_kernel_max_rows = 0}},
    {"MicroKernelsOnly", {.micro_kernel_max_rows = 1 << 20}},
    {"Avx2MicroKernelsOnly", {.micro_kernel_max_rows = 1 << 20, .allow_avx512 = false}},
    {"NoSimd", {.allow_avx512 = false, .allow_avx2 = false}},
};

// A bf16 weight and its exact fp32 widening give bit-identical outputs on the micro-kernel
// path: the engine may hold a bf16 checkpoint as bf16 without changing a single logit.
TEST(LinearForward16BitTest, Bf16StorageIsBitIdenticalToItsFp32Widening) {
  const int rows = 7, in = 576, out = 200;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(rows * in), w(static_cast<size_t>(out) * in);
  std::vector<uint16_t> bits(w.size());
  for (float& v : x) v = uniform(rng);
  for (size_t i = 0; i < w.size(); ++i) {
    bits[i] = FloatToBf16(uniform(rng));
    w[i] = Bf16ToFloat(bits[i]);
  }
  std::vector<float> from_f32(rows * out), from_bf16(rows * out);
  LinearForward(x.data(), in, w.data(), rows, in, out, from_f32.data(), out);
  LinearForward(x.data(), in, bits.data(), LoraDtype::kBF16, rows, in, out, from_bf16.data(), out);
  EXPECT_EQ(from_f32, from_bf16);
}

// A row's output is the same bits whether its weight row shares a tile with others (whose sums
// are reduced four at a time) or is computed alone, and whichever rows of x share its row tile:
// the engine relies on a request's logits not depending on its batch.
TEST(LinearForwardTest, OutputsDoNotDependOnTheirTile) {
  const int in = 1100, out = 24, rows = 13;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(rows * in), w(static_cast<size_t>(out) * in);
  for (float& v : x) v = uniform(rng);
  for (float& v : w) v = uniform(rng);
  for (const detail::LinearOptions& options :
       {detail::LinearOptions{}, detail::LinearOptions{.allow_avx512 = false}}) {
    std::vector<float> all(rows * out);
    detail::LinearForward(x.data(), in, w.data(), LoraDtype::kF32, rows, in, out, all.data(), out,
                          false, options);
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < out; ++o) {
        float alone = 0;
        detail::LinearForward(x.data() + r * in, in, w.data() + o * in, LoraDtype::kF32, 1, in, 1,
                              &alone, 1, false, options);
        ASSERT_EQ(all[r * out + o], alone) << "row " << r << " output " << o << " avx512 "
                                           << options.allow_avx512;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, LinearForwardTest, testing::ValuesIn(kVariants),
                         [](const testing::TestParamInfo<Variant>& info) {
                           return std::string(info.param.name);
                         });

// q/k/v as one fused call: bit-identical to three LinearForward calls, for mixed storage dtypes
// (a merged module is fp32 next to bf16 ones), on every micro-kernel ISA and with OpenBLAS.
TEST(LinearForwardFusedTest, MatchesOneCallPerPart) {
  const int in = 192;
  const int outs[3] = {192, 64, 64};
  const LoraDtype dtypes[3] = {LoraDtype::kBF16, LoraDtype::kF32, LoraDtype::kF16};
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<std::vector<float>> f32(3);
  std::vector<std::vector<uint16_t>> bits(3);
  for (int p = 0; p < 3; ++p) {
    f32[p].resize(static_cast<size_t>(outs[p]) * in);
    bits[p].resize(f32[p].size());
    for (size_t i = 0; i < f32[p].size(); ++i) {
      f32[p][i] = uniform(rng);
      bits[p][i] = dtypes[p] == LoraDtype::kBF16 ? FloatToBf16(f32[p][i]) : FloatToF16(f32[p][i]);
    }
  }
  auto stored = [&](int p) -> const void* {
    return dtypes[p] == LoraDtype::kF32 ? static_cast<const void*>(f32[p].data())
                                        : bits[p].data();
  };
  for (const detail::LinearOptions& options :
       {detail::LinearOptions{}, detail::LinearOptions{.allow_avx512 = false},
        detail::LinearOptions{.micro_kernel_max_rows = 0}}) {
    for (int rows : {1, 5, 64}) {
      std::vector<float> x(static_cast<size_t>(rows) * in);
      for (float& v : x) v = uniform(rng);
      std::vector<std::vector<float>> fused(3), alone(3);
      LinearPart parts[3];
      for (int p = 0; p < 3; ++p) {
        fused[p].assign(static_cast<size_t>(rows) * outs[p], -1.0f);
        alone[p].assign(fused[p].size(), -2.0f);
        parts[p] = {stored(p), dtypes[p], outs[p], fused[p].data(), outs[p]};
        detail::LinearForward(x.data(), in, stored(p), dtypes[p], rows, in, outs[p],
                              alone[p].data(), outs[p], false, options);
      }
      detail::LinearForwardFused(x.data(), in, rows, in, parts, 3, options);
      for (int p = 0; p < 3; ++p) EXPECT_EQ(fused[p], alone[p]) << "part " << p << " rows " << rows;
    }
  }
}

}  // namespace
}  // namespace loraserve::kernels
