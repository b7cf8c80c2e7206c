// CUDA paged attention over the device page pool: the device twin of kernels/cpu's
// PagedAttention, for decode and prefill rows alike, causal and GQA, fp32 KV and compute.
// Split-KV (FlashDecoding): one CTA per (work item = row x partition, KV head) writes partial
// softmax state to scratch, then a merge kernel combines each row's partitions in a fixed order,
// so results are deterministic without atomics. The work comes as fixed-capacity tables
// (attention_tables.h), so a captured CUDA graph replays any step that fits.
// Launchers return cudaError_t and never abort. Unverified on a GPU so far (no device in CI).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/attention_tables.h"
#include "kernels/plan/kv_layout.h"

namespace loraserve::kernels::cuda {

// out[r, h] = softmax(q[r, h] . K^T / sqrt(head_dim)) V over positions [0, positions[r]] of
// row r's sequence, where query head h reads KV head h / (num_heads / num_kv_heads), for every
// row of `tables` that belongs to a sequence; other rows of out are not written.
//   pool: device page pool, 16-byte aligned, laid out by `layout` (layout.kv_dim must equal
//     num_kv_heads * head_dim); `tables`: device tables; q: rows x num_heads * head_dim with
//     leading dimension ldq; scratch: AttentionScratchFloats(tables.capacity, num_heads,
//     head_dim) floats; out: rows x num_heads * head_dim with leading dimension ldo.
// head_dim must be 64, 128 or 256 and num_heads / num_kv_heads at most kAttentionMaxGroup;
// anything else returns cudaErrorInvalidValue before launching.
cudaError_t PagedAttention(const float* pool, const KvPageLayout& layout, int layer,
                           const AttentionTables& tables, const float* q, int64_t ldq,
                           int num_heads, int num_kv_heads, int head_dim, float* scratch,
                           float* out, int64_t ldo, cudaStream_t stream);

}  // namespace loraserve::kernels::cuda
