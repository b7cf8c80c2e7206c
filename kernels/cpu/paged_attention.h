// Causal GQA attention over a paged KV cache. A page holds one KV block for every layer:
// [layer][k|v][slot < block_size][kv_dim], so a sequence's cache is a list of page ids (its
// block table) and blocks can come from anywhere in the shared memory pool.
#pragma once

#include <cstdint>
#include <span>

namespace loraserve::kernels {

struct KvPageLayout {
  int block_size = 16;
  int num_layers = 0;
  int kv_dim = 0;

  int64_t page_floats() const { return int64_t{num_layers} * 2 * block_size * kv_dim; }
  // Offset of the key (kv = 0) or value (kv = 1) vector of `slot` in `page` for `layer`.
  int64_t Offset(int32_t page, int layer, int kv, int slot) const {
    return page * page_floats() + ((int64_t{layer} * 2 + kv) * block_size + slot) * kv_dim;
  }
};

// Rows [token_begin, token_end) of the step belong to one sequence; row r sits at positions[r]
// and attends to every cached position <= positions[r] of that sequence.
struct AttentionSeq {
  int token_begin = 0;
  int token_end = 0;
  const int32_t* block_table = nullptr;
};

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

}  // namespace loraserve::kernels
