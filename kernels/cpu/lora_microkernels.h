// Internal to the LoRA kernels: the per-ISA inner loops that lora.cc tiles and threads.
// Each ISA file (lora_avx2.cc, lora_portable.cc) provides the same two functions; lora.cc picks
// one set per call, so both can be tested on one machine.
#pragma once

#include <cstdint>

namespace loraserve::kernels::lora_internal {

// Shrink over the input features [i0, i1), for r < nr and k < nk:
//   out[r * ldo + k] (= or +=, per accumulate) scale * dot(a[k][i0..i1), x[r * ldx + i0..i1))
// Blocking i lets a long segment keep its x and A tiles in L1 across rank and row tiles.
using ShrinkFn = void (*)(const float* const* a, int nk, const float* x, int64_t ldx, int nr,
                          int i0, int i1, float scale, bool accumulate, float* out, int64_t ldo);

// Expand: for r < nr and j in [j0, j1):
//   y[r * ldy + j] = (y[r * ldy + j] + sum_{k < nk} v[r * ldv + k] * b[k][j]) * out_scale[j]
// (no multiply when out_scale is null). nk may be 0: then only out_scale is applied.
using ExpandFn = void (*)(const float* const* b, int nk, const float* v, int64_t ldv, int nr,
                          int j0, int j1, const float* out_scale, float* y, int64_t ldy);

struct MicroKernels {
  ShrinkFn shrink;
  ExpandFn expand;
};

MicroKernels PortableMicroKernels();
// Only call when the CPU supports AVX2 and FMA.
MicroKernels Avx2MicroKernels();

}  // namespace loraserve::kernels::lora_internal
