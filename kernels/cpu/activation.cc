#include "kernels/cpu/activation.h"

#include <cmath>

namespace loraserve::kernels {

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace loraserve::kernels
