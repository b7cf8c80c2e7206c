// CUDA LoRA shrink and expand over the device page pool: y += sum_refs scale * B (A x) per row
// segment, then y *= out_scale (DoRA) where the segment has one; the device twin of LoraApply.
// The work comes as fixed-capacity tables (lora_tables.h) built by lora_table_builder.h, so the
// grids are fixed per capacity and a captured CUDA graph replays any step that fits.
// Launchers return cudaError_t and never abort. Unverified on a GPU so far (no device in CI).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/lora_tables.h"

namespace loraserve::kernels::cuda {

// Shrink: for every work item and K chunk c,
//   partials[LoraPartialIndex(c, v_floats, LoraVIndex(seg, row, k))] =
//       scale_k * dot(A_k[c's inputs], x[row, c's inputs]).
// BGMV (8-row) and SGMV (32-row) items each get one launch of grid LoraShrinkGrid. `pool`,
// `tables`' pointers, x and partials (LoraPartialsFloats(tables.capacity, in_dim) floats) are
// device memory; x is rows x in_dim with leading dimension ldx.
cudaError_t LoraShrink(const float* pool, const LoraTables& tables, const float* x, int64_t ldx,
                       int in_dim, float* partials, cudaStream_t stream);

// Expand: y[row, j] = (y[row, j] + sum_k (sum_c partials[c][v(row, k)]) * B_k[j]) * out_scale[j]
// for every expand item, chunks summed in order (deterministic). in_dim must match the shrink's.
cudaError_t LoraExpand(const float* pool, const LoraTables& tables, const float* partials,
                       int in_dim, float* y, int64_t ldy, int out_dim, cudaStream_t stream);

// Shrink then expand on one stream.
cudaError_t LoraApplyDevice(const float* pool, const LoraTables& tables, const float* x,
                            int64_t ldx, int in_dim, float* partials, float* y, int64_t ldy,
                            int out_dim, cudaStream_t stream);

}  // namespace loraserve::kernels::cuda
