// A host emulation of the CUDA LoRA kernels: walks the same grids (LoraShrinkGrid,
// LoraExpandGrid over the full capacity, tails included) and the same work items with the same
// index functions as kernels/cuda/lora_shrink.cu and lora_expand.cu, one CTA at a time. Only
// the order of fp32 additions differs from the device. It also counts how often every partial
// and every y element is written, so tests can prove coverage.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cuda/lora_tables.h"

namespace loraserve::kernels::testing {

struct EmulationWrites {
  std::vector<int> partials;  // per partials float
  std::vector<int> y;         // per y float
};

inline void EmulateShrinkLaunch(const float* pool, const cuda::LoraTables& t,
                                const cuda::LoraShrinkItem* items, int32_t capacity, const float* x,
                                int64_t ldx, int in_dim, float* partials, EmulationWrites& writes) {
  const cuda::LoraGrid g = cuda::LoraShrinkGrid(capacity, in_dim);
  for (uint32_t bx = 0; bx < g.x; ++bx) {
    for (uint32_t by = 0; by < g.y; ++by) {
      const cuda::LoraShrinkItem item = items[bx];
      if (cuda::LoraIsEmpty(item)) continue;
      const cuda::LoraSegmentEntry seg = t.segments[item.segment];
      const int chunk = static_cast<int>(by);
      const int i0 = cuda::LoraKChunkBegin(chunk);
      const int i1 = cuda::LoraKChunkEnd(chunk, in_dim);
      for (int rr = item.rr_begin; rr < item.rr_end; ++rr) {
        const cuda::LoraRankRow row = t.rank_rows[rr];
        for (int r = item.row_begin; r < item.row_end; ++r) {
          float acc = 0.0f;
          for (int i = i0; i < i1; ++i) {
            acc += cuda::LoadLoraElement(pool, row.a_off, row.dtype, i) * x[r * ldx + i];
          }
          const int64_t at = cuda::LoraPartialIndex(chunk, t.capacity.v_floats,
                                                    cuda::LoraVIndex(seg, r, rr - seg.rr_begin));
          partials[at] = row.scale * acc;
          ++writes.partials[at];
        }
      }
    }
  }
}

inline void EmulateExpandLaunch(const float* pool, const cuda::LoraTables& t,
                                const cuda::LoraExpandItem* items, int32_t capacity,
                                const float* partials, int in_dim, float* y, int64_t ldy,
                                EmulationWrites& writes) {
  const int num_chunks = cuda::LoraNumKChunks(in_dim);
  const cuda::LoraGrid g = cuda::LoraExpandGrid(capacity);
  for (uint32_t bx = 0; bx < g.x; ++bx) {
    const cuda::LoraExpandItem item = items[bx];
    if (cuda::LoraIsEmpty(item)) continue;
    const cuda::LoraSegmentEntry seg = t.segments[item.segment];
    for (int r = item.row_begin; r < item.row_end; ++r) {
      for (int col = item.col_begin; col < item.col_end; ++col) {
        float acc = 0.0f;
        for (int k = 0; k < cuda::LoraSegmentRanks(seg); ++k) {
          const int64_t vi = cuda::LoraVIndex(seg, r, k);
          float v = 0.0f;
          for (int c = 0; c < num_chunks; ++c) {
            v += partials[cuda::LoraPartialIndex(c, t.capacity.v_floats, vi)];
          }
          const cuda::LoraRankRow row = t.rank_rows[seg.rr_begin + k];
          acc += v * cuda::LoadLoraElement(pool, row.b_off, row.dtype, col);
        }
        float* yp = y + r * ldy + col;
        *yp = cuda::LoraExpandFinish(pool, seg.out_scale_off, col, *yp, acc);
        ++writes.y[r * ldy + col];
      }
    }
  }
}

// LoraShrink then LoraExpand, as lora.cuh launches them (BGMV list, then SGMV list).
inline EmulationWrites EmulateLoraApply(const float* pool, const cuda::LoraTables& t,
                                        const float* x, int64_t ldx, int in_dim,
                                        std::vector<float>& partials, float* y, int64_t ldy,
                                        int64_t y_size) {
  EmulationWrites writes;
  writes.partials.assign(partials.size(), 0);
  writes.y.assign(static_cast<size_t>(y_size), 0);
  EmulateShrinkLaunch(pool, t, t.bgmv_shrink, t.capacity.bgmv_shrink, x, ldx, in_dim,
                      partials.data(), writes);
  EmulateShrinkLaunch(pool, t, t.sgmv_shrink, t.capacity.sgmv_shrink, x, ldx, in_dim,
                      partials.data(), writes);
  EmulateExpandLaunch(pool, t, t.bgmv_expand, t.capacity.bgmv_expand, partials.data(), in_dim, y,
                      ldy, writes);
  EmulateExpandLaunch(pool, t, t.sgmv_expand, t.capacity.sgmv_expand, partials.data(), in_dim, y,
                      ldy, writes);
  return writes;
}

}  // namespace loraserve::kernels::testing
