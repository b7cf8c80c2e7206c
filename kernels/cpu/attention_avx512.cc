// AVX-512 (F) attention inner loop (attention_tiles.inc over simd_avx512.inc). Target attribute on every
// function and internal linkage, as in lora_avx512.cc; paged_attention.cc calls it only on CPUs
// that have the ISA.
// GCC 12's AVX-512 intrinsics trip its own -Wmaybe-uninitialized (see lora_avx512.cc).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/attention_microkernels.h"
#include "kernels/plan/lora_plan.h"

#define LORASERVE_TARGET __attribute__((target("avx512f")))

namespace loraserve::kernels::attention_internal {
namespace {

#include "kernels/cpu/simd_avx512.inc"

#include "kernels/cpu/attention_tiles.inc"

}  // namespace

AttendFn Avx512Attend() { return &AttendThisIsa; }

}  // namespace loraserve::kernels::attention_internal
