// RMSNorm as in Llama: y = x / sqrt(mean(x^2) + eps) * weight, row by row.
#pragma once

#include <cstdint>

namespace loraserve::kernels {

void RmsNorm(const float* x, int64_t ldx, const float* weight, int rows, int dim, float eps,
             float* y, int64_t ldy);

}  // namespace loraserve::kernels
