// SwiGLU: out = silu(gate) * up, elementwise.
#pragma once

#include <cstdint>

namespace loraserve::kernels {

void SiluMul(const float* gate, const float* up, int64_t n, float* out);

}  // namespace loraserve::kernels
