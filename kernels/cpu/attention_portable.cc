// The portable attention inner loop: the per-ISA files' semantics in plain loops (CPUs without
// AVX2+FMA, and the tests' second implementation).
#include <algorithm>
#include <cmath>

#include "kernels/cpu/attention_microkernels.h"

namespace loraserve::kernels::attention_internal {

void PortableAttend(const AttendArgs& a) {
  const int bs = a.layout.block_size;
  for (int g = 0; g < a.group; ++g) {
    const float* q = a.q + g * a.head_dim;
    float* scores = a.scores + static_cast<int64_t>(g) * a.ctx;
    float max_score = -INFINITY;
    for (int p = 0; p < a.ctx; ++p) {
      const float* k = a.pool + a.layout.Offset(a.block_table[p / bs], a.layer, 0, p % bs) +
                       a.kv_offset;
      float dot = 0.0f;
      for (int i = 0; i < a.head_dim; ++i) dot += q[i] * k[i];
      scores[p] = dot * a.scale;
      max_score = std::max(max_score, scores[p]);
    }
    float denom = 0.0f;
    for (int p = 0; p < a.ctx; ++p) {
      scores[p] = std::exp(scores[p] - max_score);
      denom += scores[p];
    }
    float* out = a.out + g * a.head_dim;
    std::fill(out, out + a.head_dim, 0.0f);
    for (int p = 0; p < a.ctx; ++p) {
      const float* v = a.pool + a.layout.Offset(a.block_table[p / bs], a.layer, 1, p % bs) +
                       a.kv_offset;
      const float w = scores[p] / denom;
      for (int i = 0; i < a.head_dim; ++i) out[i] += w * v[i];
    }
  }
}

}  // namespace loraserve::kernels::attention_internal
