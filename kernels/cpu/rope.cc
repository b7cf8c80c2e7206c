// The angle is computed as float(position) * inv_freq in fp32, exactly like transformers, so
// long positions round the same way as the reference.
#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

namespace loraserve::kernels {

void ApplyRope(float* x, int64_t ldx, int rows, int num_heads, int head_dim,
               const int32_t* positions, const float* inv_freq) {
  const int half = head_dim / 2;
#pragma omp parallel for schedule(static) if (rows > 4)
  for (int r = 0; r < rows; ++r) {
    std::vector<float> cos_v(half), sin_v(half);
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[r]) * inv_freq[i];
      cos_v[i] = std::cos(angle);
      sin_v[i] = std::sin(angle);
    }
    float* row = x + r * ldx;
    for (int h = 0; h < num_heads; ++h) {
      float* v = row + h * head_dim;
      for (int i = 0; i < half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a * cos_v[i] - b * sin_v[i];
        v[i + half] = b * cos_v[i] + a * sin_v[i];
      }
    }
  }
}

}  // namespace loraserve::kernels
