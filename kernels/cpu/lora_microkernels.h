// Internal to the LoRA kernels: the per-ISA inner loops that lora.cc tiles and threads, and the
// scalar element reads every ISA uses for tails. Each ISA file (lora_avx512.cc, lora_avx2.cc,
// lora_portable.cc) provides the same table; lora.cc picks one table per call, so all of them
// can be tested on one machine.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/cpu/lora.h"

namespace loraserve::kernels::lora_internal {

// IEEE binary16 bits to fp32, exact (subnormals, infinities and NaNs included).
inline float F16BitsToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t word;
  if (exponent == 0 && mantissa == 0) {
    word = sign;
  } else if (exponent == 0) {  // subnormal: renormalise
    exponent = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    word = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  } else if (exponent == 31) {
    word = sign | 0x7f800000u | (mantissa << 13);
  } else {
    word = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

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
    if constexpr (D == LoraDtype::kF16) return F16BitsToFloat(bits);
    const uint32_t word = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &word, sizeof(value));
    return value;
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

// One entry per LoraDtype, indexed by its value.
struct MicroKernels {
  ShrinkFn shrink[kNumLoraDtypes];
  ExpandFn expand[kNumLoraDtypes];
};

MicroKernels PortableMicroKernels();
// Only call when detail::CpuHasAvx2Fma().
MicroKernels Avx2MicroKernels();
// Only call when detail::CpuHasAvx512().
MicroKernels Avx512MicroKernels();

}  // namespace loraserve::kernels::lora_internal
