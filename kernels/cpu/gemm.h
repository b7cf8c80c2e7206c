// y = x W^T (+ y when accumulate) for row-major x [rows x in] and a PyTorch-layout weight W
// [out x in], through OpenBLAS.
#pragma once

#include <cstdint>

namespace loraserve::kernels {

void LinearForward(const float* x, int64_t ldx, const float* weight, int rows, int in, int out,
                   float* y, int64_t ldy, bool accumulate = false);

// y[r, :] += bias for every row.
void AddBias(float* y, int64_t ldy, int rows, int out, const float* bias);

}  // namespace loraserve::kernels
