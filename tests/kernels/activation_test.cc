// SiluMulRows over views of wider rows gives SiluMul's values bit for bit and leaves the
// columns outside the view alone; every ISA's inner loop matches a double-precision SwiGLU,
// extreme inputs included.
#include "kernels/cpu/activation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace loraserve::kernels {
namespace {

TEST(ActivationTest, SiluMulRowsOnViewsEqualsSiluMulPerRow) {
  const int64_t rows = 70, cols = 1000, ld = 2 * cols + 3;  // > 65536 elements: the parallel path
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> buffer(static_cast<size_t>(rows * ld));
  for (float& v : buffer) v = normal(rng);
  std::vector<float> want(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    SiluMul(&buffer[r * ld], &buffer[r * ld + cols], cols, &want[r * cols]);
  }
  std::vector<float> got = buffer;
  SiluMulRows(got.data(), ld, got.data() + cols, ld, rows, cols, got.data(), ld);  // in place
  for (int64_t r = 0; r < rows; ++r) {
    ASSERT_EQ(std::memcmp(&got[r * ld], &want[r * cols], cols * sizeof(float)), 0) << r;
    ASSERT_EQ(std::memcmp(&got[r * ld + cols], &buffer[r * ld + cols], (ld - cols) * sizeof(float)),
              0)
        << r;
  }
}

struct IsaVariant {
  const char* name;
  detail::ActivationOptions options;
};

class SiluMulIsaTest : public testing::TestWithParam<IsaVariant> {};

TEST_P(SiluMulIsaTest, MatchesDoubleReference) {
  // 37 columns: two AVX-512 vectors, four AVX2 vectors and a scalar tail in every row.
  const int64_t rows = 5, cols = 37;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> gate(rows * cols), up(rows * cols), out(rows * cols, -1.0f);
  for (float& v : gate) v = normal(rng);
  for (float& v : up) v = normal(rng);
  // Where a naive g / (1 + e^-g) overflows or Exp clamps: large of either sign, zero, tiny.
  const float extremes[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 20.0f, -20.0f, 88.0f, -88.0f,
                            100.0f, -100.0f, 1e4f, -1e4f, 3e38f, -3e38f};
  for (size_t i = 0; i < std::size(extremes); ++i) gate[3 * i] = extremes[i];
  detail::SiluMulRows(gate.data(), cols, up.data(), cols, rows, cols, out.data(), cols,
                      GetParam().options);
  for (int64_t i = 0; i < rows * cols; ++i) {
    const double g = gate[i];
    const double want = g / (1.0 + std::exp(-g)) * up[i];
    ASSERT_TRUE(std::isfinite(out[i])) << "element " << i << " gate " << g;
    ASSERT_NEAR(out[i], want, 4e-7 * std::fabs(want) + 1e-30) << "element " << i << " gate " << g;
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, SiluMulIsaTest,
                         testing::Values(IsaVariant{"native", {}},
                                         IsaVariant{"avx2", {false, true}},
                                         IsaVariant{"portable", {false, false}}),
                         [](const testing::TestParamInfo<IsaVariant>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace loraserve::kernels
