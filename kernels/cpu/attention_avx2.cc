// AVX2+FMA attention inner loop (attention_tiles.inc over simd_avx2.inc). Target attribute on every
// function and internal linkage, as in lora_avx2.cc; paged_attention.cc calls it only on CPUs
// that have the ISA.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/attention_microkernels.h"
#include "kernels/plan/lora_plan.h"

#define LORASERVE_TARGET __attribute__((target("avx2,fma,f16c")))

namespace loraserve::kernels::attention_internal {
namespace {

#include "kernels/cpu/simd_avx2.inc"

#include "kernels/cpu/attention_tiles.inc"

}  // namespace

AttendFn Avx2Attend() { return &AttendThisIsa; }

}  // namespace loraserve::kernels::attention_internal
