// Internal to activation.cc: SwiGLU's inner loop per ISA. activation_avx512.cc and
// activation_avx2.cc provide the vector ones (activation_tiles.inc over the Simd vocabulary);
// PortableSiluMul is the scalar loop every CPU runs.
#pragma once

#include <cstdint>

namespace loraserve::kernels::activation_internal {

// out[i] = silu(gate[i]) * up[i] for i < n.
using SiluMulFn = void (*)(const float* gate, const float* up, int64_t n, float* out);

void PortableSiluMul(const float* gate, const float* up, int64_t n, float* out);
// Only call when the CPU has the ISA (kernels::detail::CpuHasAvx2Fma / CpuHasAvx512).
SiluMulFn Avx2SiluMul();
SiluMulFn Avx512SiluMul();

}  // namespace loraserve::kernels::activation_internal
