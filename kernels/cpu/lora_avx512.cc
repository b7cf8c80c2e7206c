// AVX-512 (F) LoRA micro-kernels: twice the lanes of AVX2 and 32 registers, so tiles hold twice
// the accumulators; this is what keeps multi-row decode segments near the memory floor. Same
// rules as lora_avx2.cc: target attribute on every function, internal linkage, and lora.cc
// calls these only after detail::CpuHasAvx512(). The tiles are in lora_tiles.inc.
// GCC 12's AVX-512 intrinsics seed their unused merge operand with _mm512_undefined_*(), which
// its own -Wmaybe-uninitialized then reports at every call site: a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <utility>

#include "kernels/cpu/lora_microkernels.h"

#define LORASERVE_TARGET __attribute__((target("avx512f")))

namespace loraserve::kernels::lora_internal {
namespace {

struct Simd {
  using Vec = __m512;
  static constexpr int kLanes = 16;
  // 32 zmm registers: at most 16 accumulators plus the loaded operands. One-row expand tiles
  // take 8 vectors: with 4, a 16-rank bf16 B slice was read in 128-byte pieces per rank and the
  // warm expand ran at 19 instead of 28 GB/s (one core, L3-resident adapters).
  static constexpr int MaxShrinkRanks(int nr) { return nr <= 2 ? 8 : 4; }
  static constexpr int MaxExpandVectors(int nr) { return nr == 1 ? 8 : 4; }

  LORASERVE_TARGET static Vec Zero() { return _mm512_setzero_ps(); }
  LORASERVE_TARGET static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  LORASERVE_TARGET static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  LORASERVE_TARGET static Vec Broadcast(const float* p) { return _mm512_set1_ps(*p); }
  LORASERVE_TARGET static Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  LORASERVE_TARGET static Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  LORASERVE_TARGET static float Sum(Vec v) { return _mm512_reduce_add_ps(v); }
  template <LoraDtype D>
  LORASERVE_TARGET static Vec LoadRow(const void* row, int64_t i) {
    if constexpr (D == LoraDtype::kF32) {
      return _mm512_loadu_ps(static_cast<const float*>(row) + i);
    } else {
      const __m256i bits = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + i));
      if constexpr (D == LoraDtype::kF16) return _mm512_cvtph_ps(bits);
      // bf16 is the top half of an fp32: widen and shift, exact.
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
    }
  }
};

#include "kernels/cpu/lora_tiles.inc"

}  // namespace

MicroKernels Avx512MicroKernels() { return TableForThisIsa(); }

}  // namespace loraserve::kernels::lora_internal
