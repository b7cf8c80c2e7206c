// AVX2+FMA (+F16C for fp16 rows) LoRA micro-kernels. Every function carries the target attribute
// and has internal linkage, so nothing compiled for AVX2 can leak into code run on older CPUs;
// lora.cc calls these only after detail::CpuHasAvx2Fma(). The tiles are in lora_tiles.inc.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <utility>

#include "kernels/cpu/lora_microkernels.h"

#define LORASERVE_TARGET __attribute__((target("avx2,fma,f16c")))

namespace loraserve::kernels::lora_internal {
namespace {

#include "kernels/cpu/simd_avx2.inc"

#include "kernels/cpu/lora_tiles.inc"

}  // namespace

MicroKernels Avx2MicroKernels() { return TableForThisIsa(); }

}  // namespace loraserve::kernels::lora_internal
