// Accumulates the sum of squares in double: rows are short and this keeps the result within
// a few ulps of PyTorch's fp32 reduction regardless of summation order.
#include "kernels/cpu/rms_norm.h"

#include <cmath>

namespace loraserve::kernels {

void RmsNorm(const float* x, int64_t ldx, const float* weight, int rows, int dim, float eps,
             float* y, int64_t ldy) {
#pragma omp parallel for schedule(static) if (rows > 4)
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    double sum = 0.0;
    for (int i = 0; i < dim; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(sum / dim) + eps);
    for (int i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv);
  }
}

}  // namespace loraserve::kernels
