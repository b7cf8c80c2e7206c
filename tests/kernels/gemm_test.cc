// LinearForward against a double-precision reference on both of its paths (micro-kernels for
// decode-sized batches, OpenBLAS for larger ones): row counts around the tile and threshold
// edges, dimensions with vector tails, padded leading dimensions, accumulate on and off.
#include "kernels/cpu/gemm.h"

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

void ExpectMatchesReference(const Case& c, bool accumulate, const detail::LinearOptions& options) {
  std::mt19937 rng(c.rows * 1000 + c.in + c.out);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const int64_t ldx = c.in + 3, ldy = c.out + 5;
  std::vector<float> x(c.rows * ldx), w(static_cast<size_t>(c.out) * c.in), y(c.rows * ldy);
  for (float& v : x) v = uniform(rng);
  for (float& v : w) v = uniform(rng);
  for (float& v : y) v = uniform(rng);
  std::vector<float> got = y;
  detail::LinearForward(x.data(), ldx, w.data(), c.rows, c.in, c.out, got.data(), ldy, accumulate,
                        options);
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
      SCOPED_TRACE(testing::Message() << c.rows << "x" << c.in << "->" << c.out
                                      << (accumulate ? " accumulate" : ""));
      ExpectMatchesReference(c, accumulate, options);
    }
  }
}

// On a CPU without AVX-512 (or AVX2) the wider variants fall back and rerun a narrower path.
const Variant kVariants[] = {
    {"Default", {}},
    {"OpenBlasOnly", {.micro_kernel_max_rows = 0}},
    {"MicroKernelsOnly", {.micro_kernel_max_rows = 1 << 20}},
    {"Avx2MicroKernelsOnly", {.micro_kernel_max_rows = 1 << 20, .allow_avx512 = false}},
};

INSTANTIATE_TEST_SUITE_P(Paths, LinearForwardTest, testing::ValuesIn(kVariants),
                         [](const testing::TestParamInfo<Variant>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace loraserve::kernels
