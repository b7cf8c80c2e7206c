// One task per (row, head): rows of different sequences have different context lengths, so a
// flat dynamic schedule balances decode batches and long prefills alike.
#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace loraserve::kernels {

void StoreKv(float* pool, const KvPageLayout& layout, int layer,
             std::span<const AttentionSeq> seqs, const int32_t* positions, const float* k,
             const float* v, int64_t ld) {
  for (const AttentionSeq& seq : seqs) {
    for (int r = seq.token_begin; r < seq.token_end; ++r) {
      const int32_t pos = positions[r];
      const int32_t page = seq.block_table[pos / layout.block_size];
      const int slot = pos % layout.block_size;
      std::memcpy(pool + layout.Offset(page, layer, 0, slot), k + r * ld,
                  sizeof(float) * layout.kv_dim);
      std::memcpy(pool + layout.Offset(page, layer, 1, slot), v + r * ld,
                  sizeof(float) * layout.kv_dim);
    }
  }
}

void PagedAttention(const float* pool, const KvPageLayout& layout, int layer,
                    std::span<const AttentionSeq> seqs, const int32_t* positions, const float* q,
                    int64_t ldq, int num_heads, int num_kv_heads, int head_dim, float* out,
                    int64_t ldo) {
  std::vector<int> row_seq;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int r = seqs[s].token_begin; r < seqs[s].token_end; ++r) {
      if (static_cast<int>(row_seq.size()) <= r) row_seq.resize(r + 1, -1);
      row_seq[r] = static_cast<int>(s);
    }
  }
  const int group = num_heads / num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t tasks = static_cast<int64_t>(row_seq.size()) * num_heads;
#pragma omp parallel
  {
    std::vector<float> scores;
    std::vector<float> acc(head_dim);
#pragma omp for schedule(dynamic, 4)
    for (int64_t task = 0; task < tasks; ++task) {
      const int r = static_cast<int>(task / num_heads);
      const int h = static_cast<int>(task % num_heads);
      if (row_seq[r] < 0) continue;
      const AttentionSeq& seq = seqs[row_seq[r]];
      const int ctx = positions[r] + 1;
      const float* qh = q + r * ldq + h * head_dim;
      const int kv_off = (h / group) * head_dim;
      scores.resize(ctx);
      float max_score = -INFINITY;
      for (int p = 0; p < ctx; ++p) {
        const float* kp = pool + layout.Offset(seq.block_table[p / layout.block_size], layer, 0,
                                               p % layout.block_size) +
                          kv_off;
        float dot = 0.0f;
        for (int i = 0; i < head_dim; ++i) dot += qh[i] * kp[i];
        scores[p] = dot * scale;
        max_score = std::max(max_score, scores[p]);
      }
      float denom = 0.0f;
      for (int p = 0; p < ctx; ++p) {
        scores[p] = std::exp(scores[p] - max_score);
        denom += scores[p];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int p = 0; p < ctx; ++p) {
        const float* vp = pool + layout.Offset(seq.block_table[p / layout.block_size], layer, 1,
                                               p % layout.block_size) +
                          kv_off;
        const float w = scores[p];
        for (int i = 0; i < head_dim; ++i) acc[i] += w * vp[i];
      }
      float* oh = out + r * ldo + h * head_dim;
      const float inv = 1.0f / denom;
      for (int i = 0; i < head_dim; ++i) oh[i] = acc[i] * inv;
    }
  }
}

}  // namespace loraserve::kernels
