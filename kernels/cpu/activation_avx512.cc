// AVX-512 (F) SwiGLU (activation_tiles.inc over simd_avx512.inc). Target attribute on every
// function and internal linkage, as in lora_avx512.cc; activation.cc calls it only on CPUs that
// have the ISA.
// GCC 12 reports its own AVX-512 intrinsics as maybe-uninitialized (see lora_avx512.cc).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "kernels/cpu/activation_microkernels.h"
#include "kernels/plan/lora_plan.h"

#define LORASERVE_TARGET __attribute__((target("avx512f")))

namespace loraserve::kernels::activation_internal {
namespace {

#include "kernels/cpu/simd_avx512.inc"

#include "kernels/cpu/activation_tiles.inc"

}  // namespace

SiluMulFn Avx512SiluMul() { return &SiluMulThisIsa; }

}  // namespace loraserve::kernels::activation_internal
