// Host side of the CUDA LoRA tables: flattens one module's LoraSegment/LoraRef plan into the
// fixed-capacity tables of lora_tables.h (in a pinned staging buffer, then one copy to the
// device), with every tail neutralised. Header-only and free of CUDA, so it is tested on any CPU.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/lora_tables.h"
#include "kernels/plan/lora_plan.h"

namespace loraserve::kernels::cuda {

// Whether a segment produces any work: base-only rows without out_scale stay untouched.
inline bool LoraSegmentHasWork(const LoraSegment& s) {
  return s.row_end > s.row_begin && (s.refs_end > s.refs_begin || s.out_scale != nullptr);
}

inline int LoraSegmentTileRows(int rows) { return rows >= kSgmvMinRows ? kSgmvRows : kBgmvRows; }

// The counts a plan needs: what a caller sizes LoraTableCapacity from, and what
// BuildLoraTables checks against capacity before writing anything. Validates the plan.
// `pool`/`pool_units`: the host image of the pool, to turn out_scale pointers into offsets and
// to bound every row.
inline absl::StatusOr<LoraTableCounts> CountLoraTables(std::span<const LoraSegment> segments,
                                                       std::span<const LoraRef> refs,
                                                       int64_t pool_units, int in_dim,
                                                       int out_dim) {
  if (in_dim <= 0 || out_dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoRA tables: in_dim ", in_dim, " and out_dim ", out_dim, " must be > 0"));
  }
  if (LoraNumKChunks(in_dim) > static_cast<int>(kLoraMaxGridY)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoRA tables: in_dim ", in_dim, " needs more K chunks than a grid holds"));
  }
  LoraTableCounts n;
  int64_t rank_rows = 0, bgmv_shrink = 0, sgmv_shrink = 0, bgmv_expand = 0, sgmv_expand = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    const LoraSegment& s = segments[i];
    if (s.row_begin < 0 || s.row_end < s.row_begin || s.refs_begin < 0 ||
        s.refs_end < s.refs_begin || static_cast<size_t>(s.refs_end) > refs.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("LoRA tables: segment ", i, " has rows [", s.row_begin, ", ", s.row_end,
                       ") refs [", s.refs_begin, ", ", s.refs_end, ") of ", refs.size()));
    }
    if (!LoraSegmentHasWork(s)) continue;
    int64_t k_total = 0;
    for (int r = s.refs_begin; r < s.refs_end; ++r) {
      const LoraRef& ref = refs[r];
      if (ref.rank < 1 || ref.rank > kMaxLoraRank) {
        return absl::InvalidArgumentError(absl::StrCat("LoRA tables: ref ", r, " has rank ",
                                                       ref.rank, " (1..", kMaxLoraRank, ")"));
      }
      const auto dtype = static_cast<int>(ref.dtype);
      if (dtype < 0 || dtype >= kNumLoraDtypes) {
        return absl::InvalidArgumentError(absl::StrCat("LoRA tables: ref ", r, " dtype ", dtype));
      }
      const int64_t a_units = LoraRowUnits(ref.dtype, in_dim);
      const int64_t b_units = LoraRowUnits(ref.dtype, out_dim);
      for (int k = 0; k < ref.rank; ++k) {
        if (ref.a_rows[k] < 0 || ref.a_rows[k] + a_units > pool_units || ref.b_cols[k] < 0 ||
            ref.b_cols[k] + b_units > pool_units) {
          return absl::OutOfRangeError(absl::StrCat("LoRA tables: ref ", r, " rank row ", k,
                                                    " lies outside the pool of ", pool_units,
                                                    " units"));
        }
      }
      k_total += ref.rank;
    }
    const int64_t rows = s.row_end - s.row_begin;
    const int64_t tile = LoraSegmentTileRows(static_cast<int>(rows));
    const int64_t row_tiles = (rows + tile - 1) / tile;
    const int64_t shrink = row_tiles * ((k_total + kLoraItemRanks - 1) / kLoraItemRanks);
    const int64_t expand = row_tiles * ((out_dim + kLoraExpandCols - 1) / kLoraExpandCols);
    (tile == kSgmvRows ? sgmv_shrink : bgmv_shrink) += shrink;
    (tile == kSgmvRows ? sgmv_expand : bgmv_expand) += expand;
    rank_rows += k_total;
    n.v_floats += rows * k_total;
    ++n.segments;
  }
  constexpr int64_t kMax = INT32_MAX;
  if (rank_rows > kMax || bgmv_shrink > kMax || sgmv_shrink > kMax || bgmv_expand > kMax ||
      sgmv_expand > kMax) {
    return absl::InvalidArgumentError("LoRA tables: more than 2^31 entries in one table");
  }
  n.rank_rows = static_cast<int32_t>(rank_rows);
  n.bgmv_shrink = static_cast<int32_t>(bgmv_shrink);
  n.sgmv_shrink = static_cast<int32_t>(sgmv_shrink);
  n.bgmv_expand = static_cast<int32_t>(bgmv_expand);
  n.sgmv_expand = static_cast<int32_t>(sgmv_expand);
  return n;
}

// What a captured graph bucket admits: at most `rows` rows in at most `segments` LoRA segments,
// `rank_rows` rank rows over all segments, `segment_ranks` in any one segment (a weighted set
// sums its refs' ranks), for a module of `out_dim` outputs.
struct LoraBucketLimits {
  int32_t rows = 0;
  int32_t segments = 0;
  int32_t rank_rows = 0;
  int32_t segment_ranks = kMaxLoraRank;
};

// A capacity that every plan within `limits` fits, so one graph per bucket never has to be
// re-captured for a new adapter mix. Per segment s with r_s rows and k_s ranks, items number
// ceil(r_s / tile) * ceil(k_s / 32) <= ceil(r_s / 8) * ceil(segment_ranks / 32), and summed over
// segments ceil(r_s / 8) <= (rows + 7 * segments) / 8; expand items likewise with the column
// tiles. An SGMV segment has r_s >= kSgmvRows rows, so ceil(r_s / kSgmvRows) <= 2 * r_s /
// kSgmvRows. v floats sum r_s * k_s <= rows * segment_ranks.
inline LoraTableCapacity LoraCapacityFor(const LoraBucketLimits& limits, int out_dim) {
  const int64_t row_tiles = (int64_t{limits.rows} + 7 * int64_t{limits.segments}) / kBgmvRows;
  const int64_t ranks =
      limits.segment_ranks < limits.rank_rows ? limits.segment_ranks : limits.rank_rows;
  const int64_t rank_chunks = (ranks + kLoraItemRanks - 1) / kLoraItemRanks;
  const int64_t col_tiles = (int64_t{out_dim} + kLoraExpandCols - 1) / kLoraExpandCols;
  auto clamp = [](int64_t n) { return static_cast<int32_t>(n < INT32_MAX ? n : INT32_MAX); };
  LoraTableCapacity c;
  c.segments = limits.segments;
  c.rank_rows = limits.rank_rows;
  c.bgmv_shrink = clamp(row_tiles * rank_chunks);
  static_assert(kSgmvMinRows >= kSgmvRows);
  const int64_t sgmv_row_tiles = 2 * int64_t{limits.rows} / kSgmvRows;
  c.sgmv_shrink = clamp(sgmv_row_tiles * rank_chunks);
  c.bgmv_expand = clamp(row_tiles * col_tiles);
  c.sgmv_expand = clamp(sgmv_row_tiles * col_tiles);
  c.v_floats = int64_t{limits.rows} * ranks;
  return c;
}

// The first table that `counts` overflows, named with both numbers; OK when all fit.
inline absl::Status CheckLoraCapacity(const LoraTableCounts& n, const LoraTableCapacity& c) {
  auto over = [](const char* what, int64_t need, int64_t have) {
    return absl::ResourceExhaustedError(
        absl::StrCat("LoRA tables: the step needs ", need, " ", what, " but the capacity is ", have,
                     "; raise the bucket's capacity or split the step"));
  };
  if (n.segments > c.segments) return over("segments", n.segments, c.segments);
  if (n.rank_rows > c.rank_rows) return over("rank rows", n.rank_rows, c.rank_rows);
  if (n.bgmv_shrink > c.bgmv_shrink) return over("BGMV shrink items", n.bgmv_shrink, c.bgmv_shrink);
  if (n.sgmv_shrink > c.sgmv_shrink) return over("SGMV shrink items", n.sgmv_shrink, c.sgmv_shrink);
  if (n.bgmv_expand > c.bgmv_expand) return over("BGMV expand items", n.bgmv_expand, c.bgmv_expand);
  if (n.sgmv_expand > c.sgmv_expand) return over("SGMV expand items", n.sgmv_expand, c.sgmv_expand);
  if (n.v_floats > c.v_floats) return over("shrink outputs per chunk", n.v_floats, c.v_floats);
  return absl::OkStatus();
}

// Fills `out` (host memory laid out by LoraTableLayoutFor(out.capacity)) from the plan and
// neutralises every tail. out_scale pointers must point into `pool` (DoRA factors are fp32 rows
// of the pool's address space). A backend whose pool is not host memory passes
// `out_scale_offsets` instead: one unit offset per segment (-1 where it has none), used in place
// of the pointers. Nothing is written when the plan is invalid or does not fit.
inline absl::StatusOr<LoraTableCounts> BuildLoraTables(
    std::span<const LoraSegment> segments, std::span<const LoraRef> refs, const float* pool,
    int64_t pool_units, int in_dim, int out_dim, const LoraTables& out,
    std::span<const int64_t> out_scale_offsets = {}) {
  absl::StatusOr<LoraTableCounts> counts =
      CountLoraTables(segments, refs, pool_units, in_dim, out_dim);
  if (!counts.ok()) return counts.status();
  if (absl::Status fits = CheckLoraCapacity(*counts, out.capacity); !fits.ok()) return fits;
  const bool by_offset = !out_scale_offsets.empty();
  if (by_offset && out_scale_offsets.size() != segments.size()) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA tables: ", out_scale_offsets.size(),
                                                   " out_scale offsets for ", segments.size(),
                                                   " segments"));
  }
  for (size_t i = 0; i < segments.size(); ++i) {
    if (!LoraSegmentHasWork(segments[i])) continue;
    if (by_offset) {
      const int64_t off = out_scale_offsets[i];
      if (off < -1 || (off >= 0 && off + out_dim > pool_units)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "LoRA tables: segment ", i, "'s out_scale offset ", off, " is outside the pool"));
      }
      continue;
    }
    const float* scale = segments[i].out_scale;
    if (scale != nullptr && (scale < pool || scale - pool + out_dim > pool_units)) {
      return absl::InvalidArgumentError(
          absl::StrCat("LoRA tables: segment ", i,
                       "'s out_scale (DoRA) is not a row of the pool; the CUDA "
                       "backend reads DoRA factors from pool pages"));
    }
  }
  LoraTableCounts n;
  for (size_t i = 0; i < segments.size(); ++i) {
    const LoraSegment& s = segments[i];
    if (!LoraSegmentHasWork(s)) continue;
    const int32_t seg = n.segments++;
    LoraSegmentEntry& e = out.segments[seg];
    e.row_begin = s.row_begin;
    e.row_end = s.row_end;
    e.rr_begin = n.rank_rows;
    e.v_offset = n.v_floats;
    if (by_offset) {
      e.out_scale_off = out_scale_offsets[i];
    } else {
      e.out_scale_off = s.out_scale == nullptr ? -1 : s.out_scale - pool;
    }
    for (int r = s.refs_begin; r < s.refs_end; ++r) {
      const LoraRef& ref = refs[r];
      for (int k = 0; k < ref.rank; ++k) {
        out.rank_rows[n.rank_rows++] = {ref.a_rows[k], ref.b_cols[k], ref.scale,
                                        static_cast<int32_t>(ref.dtype)};
      }
    }
    e.rr_end = n.rank_rows;
    const int rows = s.row_end - s.row_begin;
    const int tile = LoraSegmentTileRows(rows);
    const bool sgmv = tile == kSgmvRows;
    LoraShrinkItem* shrink = sgmv ? out.sgmv_shrink : out.bgmv_shrink;
    int32_t& num_shrink = sgmv ? n.sgmv_shrink : n.bgmv_shrink;
    LoraExpandItem* expand = sgmv ? out.sgmv_expand : out.bgmv_expand;
    int32_t& num_expand = sgmv ? n.sgmv_expand : n.bgmv_expand;
    for (int r = s.row_begin; r < s.row_end; r += tile) {
      const int r_end = r + tile < s.row_end ? r + tile : s.row_end;
      for (int k = e.rr_begin; k < e.rr_end; k += kLoraItemRanks) {
        shrink[num_shrink++] = {seg, r, r_end, k,
                                k + kLoraItemRanks < e.rr_end ? k + kLoraItemRanks : e.rr_end};
      }
      for (int j = 0; j < out_dim; j += kLoraExpandCols) {
        expand[num_expand++] = {seg, r, r_end, j,
                                j + kLoraExpandCols < out_dim ? j + kLoraExpandCols : out_dim};
      }
    }
    n.v_floats += int64_t{rows} * LoraSegmentRanks(e);
  }
  LoraNeutraliseTails(out, n);
  return n;
}

}  // namespace loraserve::kernels::cuda
