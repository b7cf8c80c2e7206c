// CUDA elementwise and row ops of the forward pass, the device twins of kernels/cpu's Embed,
// GatherRows, AddBias, ApplyRope, SiluMul, Add and Argmax, plus the fp32 -> bf16 cast that
// feeds cuBLAS. All are fp32 row-major with leading dimensions in elements; grids come from the
// arguments only, so they capture into CUDA graphs. Launchers return cudaError_t and never abort
// (cudaErrorInvalidValue for bad shapes, before launching). Unverified on a GPU so far.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "formats/dtype.h"

namespace loraserve::kernels::cuda {

// out[r, :dim] = table[ids[r], :dim] widened to fp32. table: vocab rows with leading dimension
// ld_table in its own elements, dtype kF32, kBF16 or kF16 (16-bit tables must be 2-byte
// aligned). An id outside [0, vocab) writes a zero row: the host validates ids, and the
// kernel still never reads out of bounds.
cudaError_t Embed(const void* table, DType dtype, int64_t ld_table, int64_t vocab,
                  const int32_t* ids, int rows, int dim, float* out, int64_t ldo,
                  cudaStream_t stream);

// out[i, :cols] = x[idx[i], :cols] for i < rows; an index outside [0, x_rows) writes zeros.
cudaError_t GatherRows(const float* x, int64_t ldx, int64_t x_rows, const int32_t* idx, int rows,
                       int cols, float* out, int64_t ldo, cudaStream_t stream);

// y[r, c] += bias[c].
cudaError_t AddBias(float* y, int64_t ldy, int rows, int cols, const float* bias,
                    cudaStream_t stream);

// Rotates rows x (num_heads * head_dim) in place, HF rotate_half layout (dimension i pairs with
// i + head_dim / 2), angle = float(positions[r]) * inv_freq[i] in fp32 like kernels/cpu's
// ApplyRope. head_dim must be even.
cudaError_t Rope(float* x, int64_t ldx, int rows, int num_heads, int head_dim,
                 const int32_t* positions, const float* inv_freq, cudaStream_t stream);

// out = silu(gate) * up = gate / (1 + exp(-gate)) * up, elementwise.
cudaError_t SiluMul(const float* gate, int64_t ldg, const float* up, int64_t ldu, int rows,
                    int cols, float* out, int64_t ldo, cudaStream_t stream);

// x += y (residual connections).
cudaError_t Add(float* x, int64_t ldx, const float* y, int64_t ldy, int rows, int cols,
                cudaStream_t stream);

// out[r] = the index of the largest of logits[r, :cols], the lowest such index on ties (as
// std::max_element). One block per row. Rows holding NaN give an unspecified index.
cudaError_t ArgmaxRows(const float* logits, int64_t ld, int rows, int cols, int32_t* out,
                       cudaStream_t stream);

// out[r * cols + c] = bf16 bits of x[r, c], rounded to nearest even with NaN kept quiet, bit
// for bit formats/half.h's FloatToBf16. out is contiguous (CUDA_R_16BF for cuBLAS).
cudaError_t CastF32ToBf16(const float* x, int64_t ldx, int rows, int cols, uint16_t* out,
                          cudaStream_t stream);
// The same for fp16 (CUDA_R_16F): round to nearest even, bit for bit formats/half.h's
// FloatToF16.
cudaError_t CastF32ToF16(const float* x, int64_t ldx, int rows, int cols, uint16_t* out,
                         cudaStream_t stream);

}  // namespace loraserve::kernels::cuda
