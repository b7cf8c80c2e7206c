// The LoRA part of one engine step as plain, device-neutral data: which rows use which
// weighted adapter set, and where each adapter's rank rows sit in the unified pool (4-byte-unit
// offsets, identical on every backend). kernels/cpu and kernels/cuda both consume it; the
// runtime's plan builder fills it once per step for every layer and module.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "formats/host_device.h"

namespace loraserve::kernels {

// How an adapter's rows are stored in the pool. Compute is always fp32; 16-bit rows halve the
// bytes a memory-bound decode step streams (bf16 and fp16 files are stored as they came, which
// is lossless). See docs/kernels_lora.md.
enum class LoraDtype : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2 };
inline constexpr int kNumLoraDtypes = 3;

// Pool units (4 bytes each, the pool's element) that one row of `length` elements occupies.
LORASERVE_HOST_DEVICE constexpr int64_t LoraRowUnits(LoraDtype dtype, int64_t length) {
  return dtype == LoraDtype::kF32 ? length : (length + 1) / 2;
}

// One (adapter, weight) pair applied to one LoRA target module, in the paged layout.
// The adapter pool stores each rank-row of A (length in_dim) and each rank-column of B (stored
// as a contiguous row of length out_dim, i.e. B transposed) somewhere in one big pool of 4-byte
// units; the kernel gets per-rank offsets (in units) into `pool`, so the pool can place rows in
// any pages. A 16-bit row packs two elements per unit, starting at its offset.
struct LoraRef {
  int rank;
  float scale;            // request weight * (alpha/r, or alpha/sqrt(r) for rsLoRA)
  const int64_t* a_rows;  // [rank] offsets of A's rows (each in_dim elements)
  const int64_t* b_cols;  // [rank] offsets of B's columns (each out_dim elements, contiguous)
  LoraDtype dtype = LoraDtype::kF32;  // element type of every row above
};

// Rows [row_begin, row_end) of x/y use refs [refs_begin, refs_end). No refs = base-only rows
// (untouched unless out_scale is set). out_scale (optional, may be nullptr): per-output-feature
// multiplier applied AFTER adding the deltas: y_row = (y_row + sum_refs delta) * out_scale; used
// for DoRA. Segments must not overlap.
struct LoraSegment {
  int row_begin, row_end, refs_begin, refs_end;
  const float* out_scale;
};

// One step's LoRA work for every (layer, module): segments grouped per module, refs shared.
// Segment ref indices point into `refs` as a whole.
struct LoraPlan {
  int num_layers = 0;
  int num_modules = 0;
  std::vector<LoraSegment> segments;
  std::vector<LoraRef> refs;
  // segments of (layer, module) are [module_begin[i], module_begin[i + 1]) with
  // i = layer * num_modules + module; empty when no row of the step uses an adapter.
  std::vector<int32_t> module_begin;

  bool empty() const { return segments.empty(); }
  std::span<const LoraSegment> Segments(int layer, int module) const {
    if (module_begin.empty()) return {};
    const int i = layer * num_modules + module;
    return std::span<const LoraSegment>(segments.data() + module_begin[i],
                                         segments.data() + module_begin[i + 1]);
  }
};

}  // namespace loraserve::kernels
