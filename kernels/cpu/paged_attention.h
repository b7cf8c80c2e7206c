// Causal GQA attention over a paged KV cache. A page holds one KV block for every layer:
// [layer][k|v][slot < block_size][kv_dim], so a sequence's cache is a list of page ids (its
// block table) and blocks can come from anywhere in the shared memory pool.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/plan/kv_layout.h"

namespace loraserve::kernels {

// Writes the step's keys and values ([rows x kv_dim], leading dimension ld) into the cache.
void StoreKv(float* pool, const KvPageLayout& layout, int layer,
             std::span<const AttentionSeq> seqs, const int32_t* positions, const float* k,
             const float* v, int64_t ld);

// out[r] = softmax(q[r] K^T / sqrt(head_dim)) V per head; head h reads KV head
// h / (num_heads / num_kv_heads).
void PagedAttention(const float* pool, const KvPageLayout& layout, int layer,
                    std::span<const AttentionSeq> seqs, const int32_t* positions, const float* q,
                    int64_t ldq, int num_heads, int num_kv_heads, int head_dim, float* out,
                    int64_t ldo);

namespace detail {

// Test and benchmark hook: force a narrower inner loop (both false: the portable one).
struct AttentionOptions {
  bool allow_avx512 = true;
  bool allow_avx2 = true;
};

void PagedAttention(const float* pool, const KvPageLayout& layout, int layer,
                    std::span<const AttentionSeq> seqs, const int32_t* positions, const float* q,
                    int64_t ldq, int num_heads, int num_kv_heads, int head_dim, float* out,
                    int64_t ldo, const AttentionOptions& options);

}  // namespace detail

}  // namespace loraserve::kernels
