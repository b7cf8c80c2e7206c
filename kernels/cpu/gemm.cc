// A single row goes through sgemv: OpenBLAS's sgemm with M=1 does not reach memory bandwidth.
#include "kernels/cpu/gemm.h"

#include <cblas.h>

namespace loraserve::kernels {

void LinearForward(const float* x, int64_t ldx, const float* weight, int rows, int in, int out,
                   float* y, int64_t ldy, bool accumulate) {
  const float beta = accumulate ? 1.0f : 0.0f;
  if (rows == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, weight, in, x, 1, beta, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, ldx, weight, in,
              beta, y, ldy);
}

void AddBias(float* y, int64_t ldy, int rows, int out, const float* bias) {
  for (int r = 0; r < rows; ++r) {
    float* yr = y + r * ldy;
    for (int i = 0; i < out; ++i) yr[i] += bias[i];
  }
}

}  // namespace loraserve::kernels
