// y = x W^T (+ y when accumulate) for row-major x [rows x in] and a PyTorch-layout weight W
// [out x in]: SIMD micro-kernels on AVX2/AVX-512 CPUs, OpenBLAS elsewhere (gemm.cc).
#pragma once

#include <cstdint>

namespace loraserve::kernels {

void LinearForward(const float* x, int64_t ldx, const float* weight, int rows, int in, int out,
                   float* y, int64_t ldy, bool accumulate = false);

// Batches of at most this many rows take the micro-kernel path: measured 2-8x faster than this
// OpenBLAS from 1 to 512 rows (tests/bench/gemm_bench.cc, docs/PERFORMANCE.md); larger ones,
// unmeasured, keep OpenBLAS's packed GEMM.
inline constexpr int kMicroKernelMaxRows = 512;

namespace detail {

// Test and benchmark hook: move the micro-kernel/OpenBLAS threshold (0 = always OpenBLAS).
struct LinearOptions {
  int micro_kernel_max_rows = kMicroKernelMaxRows;
  bool allow_avx512 = true;  // false: the AVX2 micro-kernels (still AVX-512-free CPUs' path)
};

void LinearForward(const float* x, int64_t ldx, const float* weight, int rows, int in, int out,
                   float* y, int64_t ldy, bool accumulate, const LinearOptions& options);

}  // namespace detail

// y[r, :] += bias for every row.
void AddBias(float* y, int64_t ldy, int rows, int out, const float* bias);

}  // namespace loraserve::kernels
