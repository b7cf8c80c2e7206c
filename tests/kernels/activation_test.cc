// SiluMulRows over views of wider rows gives SiluMul's values bit for bit and leaves the
// columns outside the view alone.
#include "kernels/cpu/activation.h"

#include <gtest/gtest.h>

#include <cstring>
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

}  // namespace
}  // namespace loraserve::kernels
