// OpenBLAS runs single-threaded and we split output features across OpenMP threads ourselves:
// OpenBLAS's pthread pool spins after each call and stalls the next OpenMP region (the LoRA
// and attention kernels) by a scheduler tick, which cost more than the GEMMs on small models.
#include "kernels/cpu/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

namespace loraserve::kernels {
namespace {

// Below this many multiply-adds a single thread is faster than a fork/join.
constexpr int64_t kParallelMinWork = 1 << 16;

void PinOpenBlasToOneThread() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

}  // namespace

void LinearForward(const float* x, int64_t ldx, const float* weight, int rows, int in, int out,
                   float* y, int64_t ldy, bool accumulate) {
  PinOpenBlasToOneThread();
  const float beta = accumulate ? 1.0f : 0.0f;
  const int64_t work = static_cast<int64_t>(rows) * in * out;
  const int threads = work < kParallelMinWork ? 1 : std::min(omp_get_max_threads(), out / 16 + 1);
  // Column blocks of W (rows of the PyTorch weight) are independent: thread t owns outputs
  // [begin, end) and reads only that slice of W, so the weight streams from memory once.
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num();
    const int n = omp_get_num_threads();
    const int chunk = ((out + n - 1) / n + 15) / 16 * 16;
    const int begin = std::min(out, t * chunk);
    const int end = std::min(out, begin + chunk);
    if (end > begin) {
      const float* w = weight + static_cast<int64_t>(begin) * in;
      if (rows == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, end - begin, in, 1.0f, w, in, x, 1, beta,
                    y + begin, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, end - begin, in, 1.0f, x, ldx,
                    w, in, beta, y + begin, ldy);
      }
    }
  }
}

void AddBias(float* y, int64_t ldy, int rows, int out, const float* bias) {
  for (int r = 0; r < rows; ++r) {
    float* yr = y + r * ldy;
    for (int i = 0; i < out; ++i) yr[i] += bias[i];
  }
}

}  // namespace loraserve::kernels
