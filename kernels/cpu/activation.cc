// The vector loops (activation_avx2.cc, activation_avx512.cc) replaced a scalar expf per
// element, which was 4.6% of a batch-64 decode step (docs/PERFORMANCE.md, issue 17).
#include "kernels/cpu/activation.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/activation_microkernels.h"
#include "kernels/cpu/lora.h"

namespace loraserve::kernels {
namespace activation_internal {

void PortableSiluMul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float t = std::exp(-std::fabs(g));
    out[i] = g * ((g >= 0.0f ? 1.0f : t) / (1.0f + t)) * up[i];
  }
}

}  // namespace activation_internal

namespace {

activation_internal::SiluMulFn PickSiluMul(const detail::ActivationOptions& options) {
  static const activation_internal::SiluMulFn avx512 =
      detail::CpuHasAvx512() ? activation_internal::Avx512SiluMul() : nullptr;
  static const activation_internal::SiluMulFn avx2 =
      detail::CpuHasAvx2Fma() ? activation_internal::Avx2SiluMul() : nullptr;
  if (options.allow_avx512 && avx512 != nullptr) return avx512;
  if (options.allow_avx2 && avx2 != nullptr) return avx2;
  return &activation_internal::PortableSiluMul;
}

}  // namespace

namespace detail {

void SiluMulRows(const float* gate, int64_t ldg, const float* up, int64_t ldu, int64_t rows,
                 int64_t cols, float* out, int64_t ldo, const ActivationOptions& options) {
  const activation_internal::SiluMulFn silu_mul = PickSiluMul(options);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) silu_mul(gate + r * ldg, up + r * ldu, cols, out + r * ldo);
}

}  // namespace detail

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  const activation_internal::SiluMulFn silu_mul = PickSiluMul({});
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk;
    silu_mul(gate + begin, up + begin, std::min(kChunk, n - begin), out + begin);
  }
}

void SiluMulRows(const float* gate, int64_t ldg, const float* up, int64_t ldu, int64_t rows,
                 int64_t cols, float* out, int64_t ldo) {
  detail::SiluMulRows(gate, ldg, up, ldu, rows, cols, out, ldo, {});
}

}  // namespace loraserve::kernels
