// The device image of one step's paged attention: fixed-capacity tables the CUDA attention
// kernels read (attention.cuh), filled on the host by attention_table_builder.h in one pinned
// staging buffer and copied with one cudaMemcpyAsync. All index math the kernels do (partitions,
// pool offsets, partial-result slots, grids) lives here as LORASERVE_HOST_DEVICE functions, so the
// CPU tests run the arithmetic the GPU runs. Pure C++: it compiles without nvcc.
#pragma once

#include <cmath>
#include <cstdint>

#include "formats/host_device.h"
#include "kernels/plan/kv_layout.h"

namespace loraserve::kernels::cuda {

// Cached positions per split-KV partition. Each (row, KV head, partition) gets one CTA, so the
// grid grows with context rather than with batch alone: batch-1 decode at 2048 positions with 32
// KV heads is 8 x 32 = 256 CTAs, about two per SM on a 132-SM H200, where vLLM's 512 would leave
// half the SMs idle. A partition's scores (256 x group floats) fit in shared memory, so each CTA
// does an exact two-pass softmax over its positions like the CPU reference, and 256 is a multiple
// of every power-of-two block size up to 256, so partitions cover whole pages.
inline constexpr int kAttentionPartition = 256;
// Query heads per KV head the kernels accept (their q and scores live in shared memory).
inline constexpr int kAttentionMaxGroup = 16;

// One sequence: rows [row_begin, row_end) of the step, its block table at
// block_table[block_begin, block_begin + num_blocks).
struct AttentionSeqEntry {
  int32_t row_begin, row_end;
  int32_t block_begin, num_blocks;
};

// The rows' work items [item_begin, item_end), in partition order; the merge combines them in
// that order.
struct AttentionRowItems {
  int32_t item_begin, item_end;
};

// Positions [kv_begin, kv_end) of sequence `seq` for query row `row`: one split-KV partition.
struct AttentionWorkItem {
  int32_t row, seq;
  int32_t kv_begin, kv_end;
};

// Fixed per captured graph bucket; grids are sized from it, never from a step's counts.
struct AttentionTableCapacity {
  int32_t seqs = 0;
  int32_t rows = 0;
  int32_t blocks = 0;  // block-table entries over all sequences
  int32_t items = 0;   // split-KV work items over all rows
};

// A step's counts, in the capacity's fields; the tails beyond them are neutralised.
using AttentionTableCounts = AttentionTableCapacity;

// Byte offsets of each table inside the one buffer (staging and device alike).
struct AttentionTableLayout {
  int64_t seqs, block_table, positions, row_seq, row_items, items;
  int64_t bytes;
};

// 256 B, the alignment cudaMalloc gives, so every table starts on its own cache lines.
inline constexpr int64_t kAttentionTableAlign = 256;

// Returns where a table of `bytes` starts and moves `at` past it, aligned.
LORASERVE_HOST_DEVICE constexpr int64_t AttentionTakeBytes(int64_t& at, int64_t bytes) {
  const int64_t here = at;
  at = (at + bytes + kAttentionTableAlign - 1) / kAttentionTableAlign * kAttentionTableAlign;
  return here;
}

LORASERVE_HOST_DEVICE constexpr AttentionTableLayout AttentionTableLayoutFor(
    const AttentionTableCapacity& c) {
  AttentionTableLayout l{};
  int64_t at = 0;
  l.seqs = AttentionTakeBytes(at, int64_t{c.seqs} * int64_t{sizeof(AttentionSeqEntry)});
  l.block_table = AttentionTakeBytes(at, int64_t{c.blocks} * int64_t{sizeof(int32_t)});
  l.positions = AttentionTakeBytes(at, int64_t{c.rows} * int64_t{sizeof(int32_t)});
  l.row_seq = AttentionTakeBytes(at, int64_t{c.rows} * int64_t{sizeof(int32_t)});
  l.row_items = AttentionTakeBytes(at, int64_t{c.rows} * int64_t{sizeof(AttentionRowItems)});
  l.items = AttentionTakeBytes(at, int64_t{c.items} * int64_t{sizeof(AttentionWorkItem)});
  l.bytes = at;
  return l;
}

// The tables as typed pointers into one buffer, passed to kernels by value. positions is also
// what Rope and the KV store can read for the same rows.
struct AttentionTables {
  AttentionTableCapacity capacity;
  AttentionSeqEntry* seqs;
  int32_t* block_table;
  int32_t* positions;
  int32_t* row_seq;  // -1: the row belongs to no sequence (or lies in the tail)
  AttentionRowItems* row_items;
  AttentionWorkItem* items;
};

// `base` must be aligned to kAttentionTableAlign and hold AttentionTableLayoutFor(capacity).bytes.
LORASERVE_HOST_DEVICE inline AttentionTables AttentionTablesAt(
    void* base, const AttentionTableCapacity& capacity) {
  const AttentionTableLayout l = AttentionTableLayoutFor(capacity);
  char* b = static_cast<char*>(base);
  return {capacity,
          reinterpret_cast<AttentionSeqEntry*>(b + l.seqs),
          reinterpret_cast<int32_t*>(b + l.block_table),
          reinterpret_cast<int32_t*>(b + l.positions),
          reinterpret_cast<int32_t*>(b + l.row_seq),
          reinterpret_cast<AttentionRowItems*>(b + l.row_items),
          reinterpret_cast<AttentionWorkItem*>(b + l.items)};
}

// ---- partitions

// Partitions of a row that attends to positions [0, ctx).
LORASERVE_HOST_DEVICE constexpr int AttentionNumPartitions(int ctx) {
  return (ctx + kAttentionPartition - 1) / kAttentionPartition;
}
LORASERVE_HOST_DEVICE constexpr int AttentionPartitionBegin(int part) {
  return part * kAttentionPartition;
}
LORASERVE_HOST_DEVICE constexpr int AttentionPartitionEnd(int part, int ctx) {
  return (part + 1) * kAttentionPartition < ctx ? (part + 1) * kAttentionPartition : ctx;
}

// ---- pool offsets

// The 4-byte-unit offset of KV head `kv_head`'s key (kv = 0) or value (kv = 1) at position
// `pos` of sequence `s`, exactly as the CPU reference addresses it.
LORASERVE_HOST_DEVICE inline int64_t AttentionKvOffset(const KvPageLayout& layout,
                                                       const int32_t* block_table,
                                                       const AttentionSeqEntry& s, int layer,
                                                       int kv, int pos, int kv_head, int head_dim) {
  const int32_t page = block_table[s.block_begin + pos / layout.block_size];
  return layout.Offset(page, layer, kv, pos % layout.block_size) + int64_t{kv_head} * head_dim;
}

// How far a value vector sits past its key vector: V follows K within a layer of a page.
LORASERVE_HOST_DEVICE inline int64_t AttentionValueShift(const KvPageLayout& layout) {
  return layout.Offset(0, 0, 1, 0) - layout.Offset(0, 0, 0, 0);
}

// ---- split-KV partials: scratch holds, per work item and query head, the partition's
// unnormalised output sum_p exp(s_p - m) v_p (head_dim floats), then its max m and sum
// l = sum_p exp(s_p - m). Outputs first so every output vector starts 16-byte aligned when
// head_dim is a multiple of 4.

LORASERVE_HOST_DEVICE constexpr int64_t AttentionScratchFloats(const AttentionTableCapacity& c,
                                                               int num_heads, int head_dim) {
  return int64_t{c.items} * num_heads * (head_dim + 2);
}
LORASERVE_HOST_DEVICE constexpr int64_t AttentionPartialOutIndex(int32_t item, int head,
                                                                 int num_heads, int head_dim) {
  return (int64_t{item} * num_heads + head) * head_dim;
}
LORASERVE_HOST_DEVICE constexpr int64_t AttentionPartialMaxIndex(const AttentionTableCapacity& c,
                                                                 int32_t item, int head,
                                                                 int num_heads, int head_dim) {
  return int64_t{c.items} * num_heads * head_dim + (int64_t{item} * num_heads + head) * 2;
}
// The sum sits right after the max.
LORASERVE_HOST_DEVICE constexpr int64_t AttentionPartialSumIndex(const AttentionTableCapacity& c,
                                                                 int32_t item, int head,
                                                                 int num_heads, int head_dim) {
  return AttentionPartialMaxIndex(c, item, head, num_heads, head_dim) + 1;
}

// The merge's weight for a partition of max m_part when the row's max over all partitions is
// m_all: out = sum_i exp(m_i - m_all) o_i / sum_i exp(m_i - m_all) l_i, summed in item order.
LORASERVE_HOST_DEVICE inline float AttentionRescale(float m_part, float m_all) {
  return expf(m_part - m_all);
}

// ---- grids (fixed by capacity, so a captured graph stays valid for any step that fits)

struct AttentionGrid {
  uint32_t x, y, z;
};

// x: work items, y: KV heads.
LORASERVE_HOST_DEVICE constexpr AttentionGrid AttentionPartitionGrid(
    const AttentionTableCapacity& c, int num_kv_heads) {
  return {static_cast<uint32_t>(c.items), static_cast<uint32_t>(num_kv_heads), 1};
}
// x: rows, y: query heads.
LORASERVE_HOST_DEVICE constexpr AttentionGrid AttentionMergeGrid(const AttentionTableCapacity& c,
                                                                 int num_heads) {
  return {static_cast<uint32_t>(c.rows), static_cast<uint32_t>(num_heads), 1};
}
// CUDA's limit on gridDim.y, which bounds the head counts.
inline constexpr int kAttentionMaxGridY = 65535;

// ---- tail neutralisation: entries past a step's counts must make every kernel do nothing,
// because a replayed graph launches the full capacity.

inline constexpr AttentionSeqEntry kAttentionEmptySeq = {0, 0, 0, 0};
inline constexpr AttentionRowItems kAttentionEmptyRowItems = {0, 0};
inline constexpr AttentionWorkItem kAttentionEmptyItem = {0, 0, 0, 0};

LORASERVE_HOST_DEVICE constexpr bool AttentionIsEmpty(const AttentionWorkItem& t) {
  return t.kv_end <= t.kv_begin;
}
LORASERVE_HOST_DEVICE constexpr bool AttentionIsEmpty(const AttentionRowItems& t) {
  return t.item_end <= t.item_begin;
}

template <typename T>
LORASERVE_HOST_DEVICE void AttentionFillTail(T* table, int32_t used, int32_t capacity, T empty) {
  for (int32_t i = used; i < capacity; ++i) table[i] = empty;
}

LORASERVE_HOST_DEVICE inline void AttentionNeutraliseTails(const AttentionTables& t,
                                                           const AttentionTableCounts& used) {
  const AttentionTableCapacity& c = t.capacity;
  AttentionFillTail(t.seqs, used.seqs, c.seqs, kAttentionEmptySeq);
  AttentionFillTail(t.block_table, used.blocks, c.blocks, int32_t{0});  // never read
  AttentionFillTail(t.positions, used.rows, c.rows, int32_t{0});
  AttentionFillTail(t.row_seq, used.rows, c.rows, int32_t{-1});
  AttentionFillTail(t.row_items, used.rows, c.rows, kAttentionEmptyRowItems);
  AttentionFillTail(t.items, used.items, c.items, kAttentionEmptyItem);
}

}  // namespace loraserve::kernels::cuda
