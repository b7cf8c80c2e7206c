// SwiGLU: out = silu(gate) * up, elementwise, on the widest vector ISA the CPU has.
#pragma once

#include <cstdint>

namespace loraserve::kernels {

void SiluMul(const float* gate, const float* up, int64_t n, float* out);
// The same over rows of wider buffers (gate and up as column views of one buffer), in one
// parallel region for the whole step, as SiluMul has for contiguous rows.
void SiluMulRows(const float* gate, int64_t ldg, const float* up, int64_t ldu, int64_t rows,
                 int64_t cols, float* out, int64_t ldo);

namespace detail {

// Test hook: force a narrower inner loop (both false: the portable one).
struct ActivationOptions {
  bool allow_avx512 = true;
  bool allow_avx2 = true;
};

void SiluMulRows(const float* gate, int64_t ldg, const float* up, int64_t ldu, int64_t rows,
                 int64_t cols, float* out, int64_t ldo, const ActivationOptions& options);

}  // namespace detail

}  // namespace loraserve::kernels
