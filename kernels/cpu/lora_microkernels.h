// Internal to the LoRA kernels: the per-ISA inner loops that lora.cc tiles and threads, and the
// scalar element reads every ISA uses for tails. Each ISA file (lora_avx512.cc, lora_avx2.cc,
// lora_portable.cc) provides the same table; lora.cc picks one table per call, so all of them
// can be tested on one machine.
#pragma once

#include <cstdint>
#include <cstring>

#include "formats/half.h"
#include "kernels/cpu/lora.h"

namespace loraserve::kernels::lora_internal {

// Element i of a pool row stored as D, widened to fp32. memcpy, not a cast: the pool's storage
// is float, and a 16-bit view of it would break strict aliasing.
template <LoraDtype D>
inline float LoadElement(const void* row, int64_t i) {
  if constexpr (D == LoraDtype::kF32) {
    float value;
    std::memcpy(&value, static_cast<const char*>(row) + 4 * i, sizeof(value));
    return value;
  } else {
    uint16_t bits;
    std::memcpy(&bits, static_cast<const char*>(row) + 2 * i, sizeof(bits));
    return D == LoraDtype::kF16 ? F16ToFloat(bits) : Bf16ToFloat(bits);
  }
}

// Shrink over the input features [i0, i1), for r < nr and k < nk:
//   out[r * ldo + k] (= or +=, per accumulate) scale * dot(a[k][i0..i1), x[r * ldx + i0..i1))
// Blocking i lets a long segment keep its x and A tiles in L1 across rank and row tiles.
// Every row a[k] holds elements of the table entry's dtype.
using ShrinkFn = void (*)(const void* const* a, int nk, const float* x, int64_t ldx, int nr,
                          int i0, int i1, float scale, bool accumulate, float* out, int64_t ldo);

// Expand: for r < nr and j in [j0, j1):
//   y[r * ldy + j] = (y[r * ldy + j] + sum_{k < nk} v[r * ldv + k] * b[k][j]) * out_scale[j]
// (no multiply when out_scale is null). nk may be 0: then only out_scale is applied.
using ExpandFn = void (*)(const void* const* b, int nk, const float* v, int64_t ldv, int nr,
                          int j0, int j1, const float* out_scale, float* y, int64_t ldy);

// A shrink over `count` rows of one contiguous weight w [count x ldw] (ldw in elements) with
// scale 1: y[r * ldy + n] (= or +=) dot(w[n][i0..i1), x[r * ldx + i0..i1)). Same arithmetic as
// ShrinkFn on the same rows; knowing the rows are contiguous lets it prefetch the next tile.
using LinearFn = void (*)(const void* w, int64_t ldw, int count, const float* x, int64_t ldx,
                          int nr, int i0, int i1, bool accumulate, float* y, int64_t ldy);

// One entry per LoraDtype, indexed by its value. `linear` is null in the portable table.
struct MicroKernels {
  ShrinkFn shrink[kNumLoraDtypes];
  ExpandFn expand[kNumLoraDtypes];
  LinearFn linear[kNumLoraDtypes];
  // The linear kernel for bf16 weights in bf16_pairs.h's layout with bf16_pair_lanes lanes, on
  // ISAs where that layout pays (null and 0 elsewhere: their bf16 weights stay natural).
  LinearFn linear_bf16_paired = nullptr;
  int bf16_pair_lanes = 0;
};

MicroKernels PortableMicroKernels();
// Only call when detail::CpuHasAvx2Fma().
MicroKernels Avx2MicroKernels();
// Only call when detail::CpuHasAvx512().
MicroKernels Avx512MicroKernels();

// The widest SIMD table this CPU runs among the allowed ISAs (AVX-512, then AVX2), built once;
// nullptr when neither is allowed and supported. Shared by LoraApply and LinearForward.
const MicroKernels* SimdMicroKernels(bool allow_avx512, bool allow_avx2);

}  // namespace loraserve::kernels::lora_internal
