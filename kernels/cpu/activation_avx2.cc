// AVX2+FMA SwiGLU (activation_tiles.inc over simd_avx2.inc). Target attribute on every function and
// internal linkage, as in lora_avx2.cc; activation.cc calls it only on CPUs that have the ISA.


#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "kernels/cpu/activation_microkernels.h"
#include "kernels/plan/lora_plan.h"

#define LORASERVE_TARGET __attribute__((target("avx2,fma,f16c")))

namespace loraserve::kernels::activation_internal {
namespace {

#include "kernels/cpu/simd_avx2.inc"

#include "kernels/cpu/activation_tiles.inc"

}  // namespace

SiluMulFn Avx2SiluMul() { return &SiluMulThisIsa; }

}  // namespace loraserve::kernels::activation_internal
