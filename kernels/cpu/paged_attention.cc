// One task per (row, KV head): rows of different sequences have different context lengths, so a
// flat dynamic schedule balances decode batches and long prefills alike, and the query heads of
// a GQA group share each K and V vector as it is loaded (attention_tiles.inc). The inner loop
// is picked per call from the CPU's ISA: AVX-512, AVX2+FMA, or portable loops.
#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/attention_microkernels.h"
#include "kernels/cpu/lora.h"

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

namespace {

attention_internal::AttendFn PickAttend(const detail::AttentionOptions& options) {
  static const attention_internal::AttendFn avx512 =
      detail::CpuHasAvx512() ? attention_internal::Avx512Attend() : nullptr;
  static const attention_internal::AttendFn avx2 =
      detail::CpuHasAvx2Fma() ? attention_internal::Avx2Attend() : nullptr;
  if (options.allow_avx512 && avx512 != nullptr) return avx512;
  if (options.allow_avx2 && avx2 != nullptr) return avx2;
  return &attention_internal::PortableAttend;
}

}  // namespace

namespace detail {

void PagedAttention(const float* pool, const KvPageLayout& layout, int layer,
                    std::span<const AttentionSeq> seqs, const int32_t* positions, const float* q,
                    int64_t ldq, int num_heads, int num_kv_heads, int head_dim, float* out,
                    int64_t ldo, const AttentionOptions& options) {
  const attention_internal::AttendFn attend = PickAttend(options);
  // Tasks are (row, KV head); a row's sequence is found through row_seq.
  std::vector<int> row_seq;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int r = seqs[s].token_begin; r < seqs[s].token_end; ++r) {
      if (static_cast<int>(row_seq.size()) <= r) row_seq.resize(r + 1, -1);
      row_seq[r] = static_cast<int>(s);
    }
  }
  const int group = num_heads / num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t tasks = static_cast<int64_t>(row_seq.size()) * num_kv_heads;
  const bool parallel = tasks > 1;
#pragma omp parallel if (parallel)
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 2)
    for (int64_t task = 0; task < tasks; ++task) {
      const int r = static_cast<int>(task / num_kv_heads);
      const int kv_head = static_cast<int>(task % num_kv_heads);
      if (row_seq[r] < 0) continue;
      const AttentionSeq& seq = seqs[row_seq[r]];
      attention_internal::AttendArgs args;
      args.pool = pool;
      args.layout = layout;
      args.layer = layer;
      args.block_table = seq.block_table;
      args.ctx = positions[r] + 1;
      args.kv_offset = kv_head * head_dim;
      args.q = q + r * ldq + static_cast<int64_t>(kv_head) * group * head_dim;
      args.group = group;
      args.head_dim = head_dim;
      args.scale = scale;
      scores.resize(static_cast<size_t>(group) * args.ctx);
      args.scores = scores.data();
      args.out = out + r * ldo + static_cast<int64_t>(kv_head) * group * head_dim;
      attend(args);
    }
  }
}

}  // namespace detail

void PagedAttention(const float* pool, const KvPageLayout& layout, int layer,
                    std::span<const AttentionSeq> seqs, const int32_t* positions, const float* q,
                    int64_t ldq, int num_heads, int num_kv_heads, int head_dim, float* out,
                    int64_t ldo) {
  detail::PagedAttention(pool, layout, layer, seqs, positions, q, ldq, num_heads, num_kv_heads,
                         head_dim, out, ldo, {});
}

}  // namespace loraserve::kernels
