// AVX2+FMA (+F16C for fp16 rows) LoRA micro-kernels. Every function carries the target attribute
// and has internal linkage, so nothing compiled for AVX2 can leak into code run on older CPUs;
// lora.cc calls these only after detail::CpuHasAvx2Fma(). The tiles are in lora_tiles.inc.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <utility>

#include "kernels/cpu/lora_microkernels.h"

#define LORASERVE_TARGET __attribute__((target("avx2,fma,f16c")))

namespace loraserve::kernels::lora_internal {
namespace {

struct Simd {
  using Vec = __m256;
  static constexpr int kLanes = 8;
  // 16 ymm registers: at most 8 accumulators plus the loaded operands.
  static constexpr int MaxShrinkRanks(int nr) { return nr == 1 ? 8 : nr == 2 ? 4 : 2; }
  static constexpr int MaxExpandVectors(int nr) { return nr <= 2 ? 4 : 2; }

  LORASERVE_TARGET static Vec Zero() { return _mm256_setzero_ps(); }
  LORASERVE_TARGET static Vec Load(const float* p) { return _mm256_loadu_ps(p); }
  LORASERVE_TARGET static void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  LORASERVE_TARGET static Vec Broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  LORASERVE_TARGET static Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  LORASERVE_TARGET static Vec Mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  LORASERVE_TARGET static float Sum(Vec v) {
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
  }
  template <LoraDtype D>
  LORASERVE_TARGET static Vec LoadRow(const void* row, int64_t i) {
    if constexpr (D == LoraDtype::kF32) {
      return _mm256_loadu_ps(static_cast<const float*>(row) + i);
    } else {
      const __m128i bits =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i));
      if constexpr (D == LoraDtype::kF16) return _mm256_cvtph_ps(bits);
      // bf16 is the top half of an fp32: widen and shift, exact.
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
    }
  }
};

#include "kernels/cpu/lora_tiles.inc"

}  // namespace

MicroKernels Avx2MicroKernels() { return TableForThisIsa(); }

}  // namespace loraserve::kernels::lora_internal
