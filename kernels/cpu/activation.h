// SwiGLU: out = silu(gate) * up, elementwise.
#pragma once

#include <cstdint>

namespace loraserve::kernels {

void SiluMul(const float* gate, const float* up, int64_t n, float* out);
// The same over rows of wider buffers (gate and up as column views of one buffer), in one
// parallel region for the whole step, as SiluMul has for contiguous rows.
void SiluMulRows(const float* gate, int64_t ldg, const float* up, int64_t ldu, int64_t rows,
                 int64_t cols, float* out, int64_t ldo);

}  // namespace loraserve::kernels
