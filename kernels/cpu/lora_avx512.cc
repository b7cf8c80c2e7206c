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

#include "kernels/cpu/simd_avx512.inc"

#include "kernels/cpu/lora_tiles.inc"

}  // namespace

MicroKernels Avx512MicroKernels() { return TableForThisIsa(); }

}  // namespace loraserve::kernels::lora_internal
