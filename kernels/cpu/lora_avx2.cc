// AVX2+FMA micro-kernels for LoRA shrink/expand. Every function carries target("avx2,fma") and
// has internal linkage, so nothing compiled for AVX2 can leak into code run on older CPUs;
// lora.cc calls these only after __builtin_cpu_supports says the CPU has both extensions.
#include <immintrin.h>

#include <cstdint>
#include <utility>

#include "kernels/cpu/lora_microkernels.h"

#define LORASERVE_AVX2 __attribute__((target("avx2,fma")))

namespace loraserve::kernels::lora_internal {
namespace {

using ShrinkTileFn = void (*)(const float* const* a, const float* x, int64_t ldx, int i0, int i1,
                              float scale, bool accumulate, float* out, int64_t ldo);
using ExpandTileFn = void (*)(const float* const* b, int nk, const float* v, int64_t ldv, int j,
                              const float* out_scale, float* y, int64_t ldy);

LORASERVE_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

// NR x rows by NK rank rows of A: NR * NK independent accumulator chains (at most 8), each A
// vector loaded once and reused for all NR rows.
template <int NR, int NK>
LORASERVE_AVX2 void ShrinkTile(const float* const* a, const float* x, int64_t ldx, int i0, int i1,
                               float scale, bool accumulate, float* out, int64_t ldo) {
  __m256 acc[NR][NK];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int k = 0; k < NK; ++k) acc[r][k] = _mm256_setzero_ps();
  int i = i0;
  for (; i + 8 <= i1; i += 8) {
    __m256 av[NK];
#pragma GCC unroll 8
    for (int k = 0; k < NK; ++k) av[k] = _mm256_loadu_ps(a[k] + i);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + r * ldx + i);
#pragma GCC unroll 8
      for (int k = 0; k < NK; ++k) acc[r][k] = _mm256_fmadd_ps(av[k], xv, acc[r][k]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 8
    for (int k = 0; k < NK; ++k) {
      float s = HorizontalSum(acc[r][k]);
      for (int t = i; t < i1; ++t) s += a[k][t] * x[r * ldx + t];
      out[r * ldo + k] = accumulate ? out[r * ldo + k] + scale * s : scale * s;
    }
  }
}

// NR rows by NV vectors of 8 output features; B is streamed once per row tile.
template <int NR, int NV>
LORASERVE_AVX2 void ExpandTile(const float* const* b, int nk, const float* v, int64_t ldv, int j,
                               const float* out_scale, float* y, int64_t ldy) {
  __m256 acc[NR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) acc[r][u] = _mm256_loadu_ps(y + r * ldy + j + 8 * u);
  for (int k = 0; k < nk; ++k) {
    __m256 bv[NV];
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) bv[u] = _mm256_loadu_ps(b[k] + j + 8 * u);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const __m256 s = _mm256_broadcast_ss(v + r * ldv + k);
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) acc[r][u] = _mm256_fmadd_ps(s, bv[u], acc[r][u]);
    }
  }
  if (out_scale != nullptr) {
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) {
      const __m256 o = _mm256_loadu_ps(out_scale + j + 8 * u);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) acc[r][u] = _mm256_mul_ps(acc[r][u], o);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) _mm256_storeu_ps(y + r * ldy + j + 8 * u, acc[r][u]);
}

// Compile-time tile shapes for runtime sizes: index [nr - 1][n - 1].
template <int NR, std::size_t... I>
ShrinkTileFn PickShrinkTile(int nk, std::index_sequence<I...>) {
  static constexpr ShrinkTileFn kTiles[] = {&ShrinkTile<NR, static_cast<int>(I) + 1>...};
  return kTiles[nk - 1];
}

template <int NR, std::size_t... I>
ExpandTileFn PickExpandTile(int nv, std::index_sequence<I...>) {
  static constexpr ExpandTileFn kTiles[] = {&ExpandTile<NR, static_cast<int>(I) + 1>...};
  return kTiles[nv - 1];
}

// Widest rank tile for a row tile of nr rows, keeping nr * nk <= 8 accumulators.
constexpr int MaxShrinkRanks(int nr) { return nr == 1 ? 8 : nr == 2 ? 4 : 2; }

ShrinkTileFn ShrinkTileFor(int nr, int nk) {
  switch (nr) {
    case 1:
      return PickShrinkTile<1>(nk, std::make_index_sequence<MaxShrinkRanks(1)>{});
    case 2:
      return PickShrinkTile<2>(nk, std::make_index_sequence<MaxShrinkRanks(2)>{});
    case 3:
      return PickShrinkTile<3>(nk, std::make_index_sequence<MaxShrinkRanks(3)>{});
    default:
      return PickShrinkTile<4>(nk, std::make_index_sequence<MaxShrinkRanks(4)>{});
  }
}

// Widest feature tile (in vectors of 8) for a row tile of nr rows.
constexpr int MaxExpandVectors(int nr) { return nr <= 2 ? 4 : 2; }

ExpandTileFn ExpandTileFor(int nr, int nv) {
  switch (nr) {
    case 1:
      return PickExpandTile<1>(nv, std::make_index_sequence<MaxExpandVectors(1)>{});
    case 2:
      return PickExpandTile<2>(nv, std::make_index_sequence<MaxExpandVectors(2)>{});
    case 3:
      return PickExpandTile<3>(nv, std::make_index_sequence<MaxExpandVectors(3)>{});
    default:
      return PickExpandTile<4>(nv, std::make_index_sequence<MaxExpandVectors(4)>{});
  }
}

LORASERVE_AVX2 void Shrink(const float* const* a, int nk, const float* x, int64_t ldx, int nr,
                           int i0, int i1, float scale, bool accumulate, float* out, int64_t ldo) {
  // Row tiles outer: the tile's x rows stay in L1 while every rank tile reads them.
  for (int r = 0; r < nr;) {
    const int tr = nr - r < 4 ? nr - r : 4;
    const int max_k = MaxShrinkRanks(tr);
    for (int k = 0; k < nk; k += max_k) {
      const int tk = nk - k < max_k ? nk - k : max_k;
      ShrinkTileFor(tr, tk)(a + k, x + r * ldx, ldx, i0, i1, scale, accumulate, out + r * ldo + k,
                            ldo);
    }
    r += tr;
  }
}

LORASERVE_AVX2 void Expand(const float* const* b, int nk, const float* v, int64_t ldv, int nr,
                           int j0, int j1, const float* out_scale, float* y, int64_t ldy) {
  for (int r = 0; r < nr;) {
    const int tr = nr - r < 4 ? nr - r : 4;
    const float* vr = v + r * ldv;
    float* yr = y + r * ldy;
    const int nv = MaxExpandVectors(tr);
    const ExpandTileFn wide = ExpandTileFor(tr, nv);
    const ExpandTileFn narrow = ExpandTileFor(tr, 1);
    int j = j0;
    for (; j + 8 * nv <= j1; j += 8 * nv) wide(b, nk, vr, ldv, j, out_scale, yr, ldy);
    for (; j + 8 <= j1; j += 8) narrow(b, nk, vr, ldv, j, out_scale, yr, ldy);
    for (; j < j1; ++j) {
      for (int t = 0; t < tr; ++t) {
        float s = yr[t * ldy + j];
        for (int k = 0; k < nk; ++k) s += vr[t * ldv + k] * b[k][j];
        yr[t * ldy + j] = out_scale != nullptr ? s * out_scale[j] : s;
      }
    }
    r += tr;
  }
}

}  // namespace

MicroKernels Avx2MicroKernels() { return {&Shrink, &Expand}; }

}  // namespace loraserve::kernels::lora_internal
