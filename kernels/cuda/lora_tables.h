// The device image of one module's LoRA work in one step: fixed-capacity tables the CUDA
// shrink/expand kernels read (lora.cuh), filled on the host by lora_table_builder.h and copied in
// one cudaMemcpyAsync. Every index computation the kernels make lives here as a
// LORASERVE_HOST_DEVICE function, so the CPU tests run exactly the index math the GPU runs.
// Pure C++: it compiles without nvcc.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

#include "formats/half.h"
#include "formats/host_device.h"
#include "kernels/plan/lora_plan.h"

namespace loraserve::kernels::cuda {

// Input features per split-K chunk. Each shrink CTA covers one chunk of one work item and
// writes its own fp32 partials; the expand sums the chunks in a fixed order, so there are no
// atomics, no memset and no grid sync, and results are deterministic. 256 keeps a 32-row x tile
// at 32 KiB of shared memory and gives a 4096-wide input 16 CTAs per item.
inline constexpr int kLoraKChunk = 256;
// Rank rows per shrink work item: a rank-512 segment becomes 16 items, a rank-1 segment one,
// with no padding to the largest rank in the launch.
inline constexpr int kLoraItemRanks = 32;
// Rows per work item: short (decode) segments get 8-row BGMV tiles, long (prefill) segments
// 32-row SGMV tiles, chosen per segment.
inline constexpr int kBgmvRows = 8;
inline constexpr int kSgmvRows = 32;
inline constexpr int kSgmvMinRows = 32;
// Output features per expand work item: one thread owns one column of every row of the item,
// so out_scale (DoRA) applies after the whole sum, as LoraApply does.
inline constexpr int kLoraExpandCols = 256;
// Rank rows the expand stages in shared memory per pass.
inline constexpr int kLoraExpandRanks = 64;
inline constexpr int kMaxLoraRank = 512;

// One rank row: A row k and B column k of one ref, with the ref's scale (weight * alpha / r,
// sign included) folded in. Offsets are 4-byte pool units, never pointers, so loading or
// evicting adapters never invalidates a captured graph.
struct LoraRankRow {
  int64_t a_off;
  int64_t b_off;
  float scale;
  int32_t dtype;  // a LoraDtype value
};

// A segment's rank rows are the concatenation of its refs' rows: [rr_begin, rr_end). Its shrink
// output v[row][k] lives at v_offset + (row - row_begin) * k_total + k within every partials
// chunk. out_scale_off < 0: no DoRA factor; otherwise an fp32 row of out_dim in the pool.
struct LoraSegmentEntry {
  int32_t row_begin, row_end;
  int32_t rr_begin, rr_end;
  int64_t v_offset;
  int64_t out_scale_off;
};

// Shrink work: rows [row_begin, row_end) x rank rows [rr_begin, rr_end) of `segment`, one CTA
// per (item, K chunk).
struct LoraShrinkItem {
  int32_t segment;
  int32_t row_begin, row_end;
  int32_t rr_begin, rr_end;
};

// Expand work: rows [row_begin, row_end) x output features [col_begin, col_end) of `segment`.
struct LoraExpandItem {
  int32_t segment;
  int32_t row_begin, row_end;
  int32_t col_begin, col_end;
};

// Fixed per captured graph bucket; grids are sized from it, never from a step's counts.
struct LoraTableCapacity {
  int32_t segments = 0;
  int32_t rank_rows = 0;
  int32_t bgmv_shrink = 0;
  int32_t sgmv_shrink = 0;
  int32_t bgmv_expand = 0;
  int32_t sgmv_expand = 0;
  int64_t v_floats = 0;  // shrink outputs per K chunk: the partials buffer's chunk stride
};

// Byte offsets of each table inside the one buffer (staging and device alike).
struct LoraTableLayout {
  int64_t segments, rank_rows, bgmv_shrink, sgmv_shrink, bgmv_expand, sgmv_expand;
  int64_t bytes;
};

// 256 B, the alignment cudaMalloc gives, so every table starts on its own cache lines.
inline constexpr int64_t kLoraTableAlign = 256;

LORASERVE_HOST_DEVICE constexpr int64_t LoraAlignUp(int64_t n, int64_t align) {
  return (n + align - 1) / align * align;
}

// Returns where a table of `bytes` starts and moves `at` past it, aligned.
LORASERVE_HOST_DEVICE constexpr int64_t LoraTakeBytes(int64_t& at, int64_t bytes) {
  const int64_t here = at;
  at = LoraAlignUp(at + bytes, kLoraTableAlign);
  return here;
}

LORASERVE_HOST_DEVICE constexpr LoraTableLayout LoraTableLayoutFor(const LoraTableCapacity& c) {
  LoraTableLayout l{};
  int64_t at = 0;
  l.segments = LoraTakeBytes(at, int64_t{c.segments} * int64_t{sizeof(LoraSegmentEntry)});
  l.rank_rows = LoraTakeBytes(at, int64_t{c.rank_rows} * int64_t{sizeof(LoraRankRow)});
  l.bgmv_shrink = LoraTakeBytes(at, int64_t{c.bgmv_shrink} * int64_t{sizeof(LoraShrinkItem)});
  l.sgmv_shrink = LoraTakeBytes(at, int64_t{c.sgmv_shrink} * int64_t{sizeof(LoraShrinkItem)});
  l.bgmv_expand = LoraTakeBytes(at, int64_t{c.bgmv_expand} * int64_t{sizeof(LoraExpandItem)});
  l.sgmv_expand = LoraTakeBytes(at, int64_t{c.sgmv_expand} * int64_t{sizeof(LoraExpandItem)});
  l.bytes = at;
  return l;
}

// The tables as typed pointers into one buffer, passed to kernels by value.
struct LoraTables {
  LoraTableCapacity capacity;
  LoraSegmentEntry* segments;
  LoraRankRow* rank_rows;
  LoraShrinkItem* bgmv_shrink;
  LoraShrinkItem* sgmv_shrink;
  LoraExpandItem* bgmv_expand;
  LoraExpandItem* sgmv_expand;
};

// `base` must be aligned to kLoraTableAlign and hold LoraTableLayoutFor(capacity).bytes.
LORASERVE_HOST_DEVICE inline LoraTables LoraTablesAt(void* base,
                                                     const LoraTableCapacity& capacity) {
  const LoraTableLayout l = LoraTableLayoutFor(capacity);
  char* b = static_cast<char*>(base);
  return {capacity,
          reinterpret_cast<LoraSegmentEntry*>(b + l.segments),
          reinterpret_cast<LoraRankRow*>(b + l.rank_rows),
          reinterpret_cast<LoraShrinkItem*>(b + l.bgmv_shrink),
          reinterpret_cast<LoraShrinkItem*>(b + l.sgmv_shrink),
          reinterpret_cast<LoraExpandItem*>(b + l.bgmv_expand),
          reinterpret_cast<LoraExpandItem*>(b + l.sgmv_expand)};
}

// ---- split-K and shrink-output indexing

LORASERVE_HOST_DEVICE constexpr int LoraNumKChunks(int in_dim) {
  return (in_dim + kLoraKChunk - 1) / kLoraKChunk;
}
LORASERVE_HOST_DEVICE constexpr int LoraKChunkBegin(int chunk) { return chunk * kLoraKChunk; }
LORASERVE_HOST_DEVICE constexpr int LoraKChunkEnd(int chunk, int in_dim) {
  return (chunk + 1) * kLoraKChunk < in_dim ? (chunk + 1) * kLoraKChunk : in_dim;
}
// Floats the partials buffer needs for a module of `in_dim` inputs.
LORASERVE_HOST_DEVICE constexpr int64_t LoraPartialsFloats(const LoraTableCapacity& c, int in_dim) {
  return int64_t{LoraNumKChunks(in_dim)} * c.v_floats;
}

LORASERVE_HOST_DEVICE constexpr int LoraSegmentRanks(const LoraSegmentEntry& s) {
  return s.rr_end - s.rr_begin;
}
// Where v[row][k] of segment s sits within one K chunk; k counts from the segment's first rank
// row.
LORASERVE_HOST_DEVICE constexpr int64_t LoraVIndex(const LoraSegmentEntry& s, int row, int k) {
  return s.v_offset + int64_t{row - s.row_begin} * LoraSegmentRanks(s) + k;
}
LORASERVE_HOST_DEVICE constexpr int64_t LoraPartialIndex(int chunk, int64_t v_stride,
                                                         int64_t v_index) {
  return int64_t{chunk} * v_stride + v_index;
}

// ---- pool rows

// Element i of the row at unit offset `off`, widened to fp32. A 16-bit row packs two elements
// per unit, little-endian, starting at its offset (LoraRowUnits).
LORASERVE_HOST_DEVICE inline float LoadLoraElement(const float* pool, int64_t off, int32_t dtype,
                                                   int64_t i) {
  if (dtype == static_cast<int32_t>(LoraDtype::kF32)) return pool[off + i];
#if defined(__CUDA_ARCH__)
  // Intrinsics rather than formats/half.h here: its memcpy through a local word puts that word
  // on the stack in device code (ptxas reports it as a spill). Both widenings are exact, so the
  // values are identical.
  const uint16_t bits = reinterpret_cast<const uint16_t*>(pool + off)[i];
  if (dtype == static_cast<int32_t>(LoraDtype::kF16)) return __half2float(__ushort_as_half(bits));
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
#else
  uint16_t bits;  // memcpy: the host pool is float storage, a 16-bit view would alias it
  std::memcpy(&bits, reinterpret_cast<const char*>(pool + off) + 2 * i, sizeof(bits));
  return dtype == static_cast<int32_t>(LoraDtype::kF16) ? F16ToFloat(bits) : Bf16ToFloat(bits);
#endif
}

// The expand epilogue for one output element: the delta is added first, then DoRA's factor
// multiplies the whole sum, matching LoraApply.
LORASERVE_HOST_DEVICE inline float LoraExpandFinish(const float* pool, int64_t out_scale_off,
                                                    int col, float y, float delta) {
  const float sum = y + delta;
  return out_scale_off < 0 ? sum : sum * pool[out_scale_off + col];
}

// ---- grids (fixed by capacity, so a captured graph stays valid for any step that fits)

struct LoraGrid {
  uint32_t x, y, z;
};

// x: work items, y: K chunks.
LORASERVE_HOST_DEVICE constexpr LoraGrid LoraShrinkGrid(int32_t item_capacity, int in_dim) {
  return {static_cast<uint32_t>(item_capacity), static_cast<uint32_t>(LoraNumKChunks(in_dim)), 1};
}
LORASERVE_HOST_DEVICE constexpr LoraGrid LoraExpandGrid(int32_t item_capacity) {
  return {static_cast<uint32_t>(item_capacity), 1, 1};
}
// CUDA's limit on gridDim.y; also bounds in_dim (65535 chunks of 256).
inline constexpr uint32_t kLoraMaxGridY = 65535;

// ---- tail neutralisation: entries past a step's counts must make every kernel do nothing
// (an empty row range), because a replayed graph launches the full capacity.

inline constexpr LoraShrinkItem kLoraEmptyShrinkItem = {0, 0, 0, 0, 0};
inline constexpr LoraExpandItem kLoraEmptyExpandItem = {0, 0, 0, 0, 0};
inline constexpr LoraSegmentEntry kLoraEmptySegment = {0, 0, 0, 0, 0, -1};
inline constexpr LoraRankRow kLoraEmptyRankRow = {0, 0, 0.0f, 0};

LORASERVE_HOST_DEVICE constexpr bool LoraIsEmpty(const LoraShrinkItem& t) {
  return t.row_end <= t.row_begin || t.rr_end <= t.rr_begin;
}
LORASERVE_HOST_DEVICE constexpr bool LoraIsEmpty(const LoraExpandItem& t) {
  return t.row_end <= t.row_begin || t.col_end <= t.col_begin;
}

template <typename T>
LORASERVE_HOST_DEVICE void LoraFillTail(T* table, int32_t used, int32_t capacity, T empty) {
  for (int32_t i = used; i < capacity; ++i) table[i] = empty;
}

// Counts of one step's entries, in the capacity's fields (a step fits when every count is at most
// its capacity); the tails beyond them are neutralised.
using LoraTableCounts = LoraTableCapacity;

LORASERVE_HOST_DEVICE inline void LoraNeutraliseTails(const LoraTables& t,
                                                      const LoraTableCounts& used) {
  const LoraTableCapacity& c = t.capacity;
  LoraFillTail(t.segments, used.segments, c.segments, kLoraEmptySegment);
  LoraFillTail(t.rank_rows, used.rank_rows, c.rank_rows, kLoraEmptyRankRow);
  LoraFillTail(t.bgmv_shrink, used.bgmv_shrink, c.bgmv_shrink, kLoraEmptyShrinkItem);
  LoraFillTail(t.sgmv_shrink, used.sgmv_shrink, c.sgmv_shrink, kLoraEmptyShrinkItem);
  LoraFillTail(t.bgmv_expand, used.bgmv_expand, c.bgmv_expand, kLoraEmptyExpandItem);
  LoraFillTail(t.sgmv_expand, used.sgmv_expand, c.sgmv_expand, kLoraEmptyExpandItem);
}

}  // namespace loraserve::kernels::cuda
