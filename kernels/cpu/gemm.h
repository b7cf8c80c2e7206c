// y = x W^T (+ y when accumulate) for row-major x [rows x in] and a PyTorch-layout weight W
// [out x in]: SIMD micro-kernels on AVX2/AVX-512 CPUs, OpenBLAS elsewhere (gemm.cc).
#pragma once

#include <cstdint>

#include "kernels/plan/lora_plan.h"

namespace loraserve::kernels {

void LinearForward(const float* x, int64_t ldx, const float* weight, int rows, int in, int out,
                   float* y, int64_t ldy, bool accumulate = false);

// The same for a weight stored as `dtype` (LoraDtype names the element types the micro-kernels
// widen: fp32, bf16, fp16). 16-bit weights are widened in registers and accumulated in fp32, so
// a bf16 checkpoint held as bf16 gives bit-identical results to its fp32 widening.
void LinearForward(const float* x, int64_t ldx, const void* weight, LoraDtype dtype, int rows,
                   int in, int out, float* y, int64_t ldy, bool accumulate = false);

// Batches of at most this many rows take the micro-kernel path: measured 2-8x faster than this
// OpenBLAS from 1 to 512 rows (tests/bench/gemm_bench.cc, docs/PERFORMANCE.md); larger ones,
// unmeasured, keep OpenBLAS's packed GEMM.
inline constexpr int kMicroKernelMaxRows = 512;

// One weight of a fused projection: y = x W^T for W [out x in] stored as dtype.
struct LinearPart {
  const void* weight;
  LoraDtype dtype;
  int out;
  float* y;
  int64_t ldy;
  // Nonzero: a bf16 weight in bf16_pairs.h's paired layout with this many lanes, which must be
  // detail::Bf16PairLanes of the options it is run with (then the micro-kernels read it as it
  // is; otherwise, or on the OpenBLAS path, it is widened back to natural order first).
  int bf16_pair_lanes = 0;
};

// Every part from the same x [rows x in] in one parallel region (q/k/v, gate/up): one fork/join
// instead of one per weight, and x stays in cache across the parts. Same results as
// LinearForward per part.
void LinearForwardFused(const float* x, int64_t ldx, int rows, int in,
                        const LinearPart* parts, int num_parts);

namespace detail {

// Test and benchmark hook: move the micro-kernel/OpenBLAS threshold (0 = always OpenBLAS).
struct LinearOptions {
  int micro_kernel_max_rows = kMicroKernelMaxRows;
  bool allow_avx512 = true;  // false: the AVX2 micro-kernels (still AVX-512-free CPUs' path)
  bool allow_avx2 = true;    // both false: OpenBLAS for every size (CPUs without AVX2+FMA)
};

void LinearForward(const float* x, int64_t ldx, const void* weight, LoraDtype dtype, int rows,
                   int in, int out, float* y, int64_t ldy, bool accumulate,
                   const LinearOptions& options);

// One part (any layout) against x [rows x in].
void LinearForward(const float* x, int64_t ldx, int rows, int in, const LinearPart& part,
                   bool accumulate, const LinearOptions& options);

// The lanes of the paired layout the micro-kernels chosen by `options` read bf16 weights in
// (bf16_pairs.h), or 0 when they read natural bf16: the layout a backend should store them in.
int Bf16PairLanes(const LinearOptions& options);

void LinearForwardFused(const float* x, int64_t ldx, int rows, int in, const LinearPart* parts,
                        int num_parts, const LinearOptions& options);

}  // namespace detail

// y[r, :] += bias for every row.
void AddBias(float* y, int64_t ldy, int rows, int out, const float* bias);

}  // namespace loraserve::kernels
