// STREAM "copy" kernel: a[i] = b[i] over 2 x 256 MiB, counted as 2 bytes moved per byte copied.
#include "tests/bench/bandwidth.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>

namespace loraserve::bench {
namespace {

double MeasureOnce(float* dst, const float* src, size_t n) {
  const auto start = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) dst[i] = src[i];
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return 2.0 * n * sizeof(float) / seconds / 1e9;
}

}  // namespace

double MeasureCopyBandwidthGBs() {
  static const double cached = [] {
    constexpr size_t kFloats = size_t{64} << 20;  // 256 MiB per buffer
    std::unique_ptr<float[]> a(new float[kFloats]);
    std::unique_ptr<float[]> b(new float[kFloats]);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < static_cast<int64_t>(kFloats); ++i) {
      a[i] = 0.0f;
      b[i] = static_cast<float>(i & 1023);
    }
    double best = 0.0;
    for (int rep = 0; rep < 5; ++rep) best = std::max(best, MeasureOnce(a.get(), b.get(), kFloats));
    return best;
  }();
  return cached;
}

}  // namespace loraserve::bench
