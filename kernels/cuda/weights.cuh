// CUDA kernels for the base weights: widening 16-bit storage to fp32 (a merged module's live
// copy, as on the CPU) and DoRA's per-row scale after a merge. Launchers return cudaError_t and
// never abort. Unverified on a GPU so far (no device in CI).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace loraserve::kernels::cuda {

// out[i] = widen(in[i]) for n 16-bit values; `bf16` picks bf16, else fp16. Exact.
cudaError_t WidenToF32(const uint16_t* in, bool bf16, int64_t n, float* out, cudaStream_t stream);

// out[i] = round-to-nearest-even(in[i]) as bf16 or fp16: the activations cuBLAS multiplies with
// 16-bit weights. `in` is rows x cols with leading dimension ld; out is contiguous.
cudaError_t NarrowRows(const float* in, int64_t ld, int64_t rows, int64_t cols, bool bf16,
                       uint16_t* out, cudaStream_t stream);

// w[r][c] *= scale[r] for a rows x cols row-major matrix (DoRA: W' = m / ||W + sBA|| * (...)).
cudaError_t ScaleRows(float* w, int64_t rows, int64_t cols, const float* scale,
                      cudaStream_t stream);

}  // namespace loraserve::kernels::cuda
