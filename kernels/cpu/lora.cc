// LoraApply: turns the segment table into BGMV and SGMV work and runs it. BGMV (short segments)
// is two flat task lists, shrink then expand, over the OpenMP team, so one row x 64 adapters and
// 63 rows x 1 adapter both split across threads; SGMV (long segments) gathers the segment's pages
// into dense panels and runs two OpenBLAS GEMMs, where the rows amortise the gather.
#include "kernels/cpu/lora.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/lora_microkernels.h"

namespace loraserve::kernels {
namespace {

using lora_internal::MicroKernels;

// Task sizes: small enough that every thread gets several tasks in both decode extremes, large
// enough that a task streams at least 16 KB of adapter weights (4096-wide rows).
constexpr int kShrinkTaskRanks = 4;
constexpr int kShrinkTaskRows = 16;
constexpr int kExpandTaskFeatures = 256;

// The rank rows of every ref in a segment, concatenated: the shrink writes
// v[row][k_total] (scale folded in) and the expand reads all refs' B columns in one pass, so
// weighted sets cost one read-modify-write of y and out_scale sees the full sum.
struct BgmvSegment {
  const LoraSegment* segment;
  int64_t v_offset;  // into v: rows x k_total
  int64_t k_offset;  // into a_rows / b_cols: k_total
  int k_total;
};

struct ShrinkTask {
  int bgmv;
  int k_begin;  // within the segment's concatenated ranks
  int k_count;
  float scale;
  int row_begin, row_end;  // relative to the segment
};

struct ExpandTask {
  int bgmv;
  int j_begin, j_end;
};

void RunBgmv(const MicroKernels& mk, const float* pool, const float* x, int64_t ldx, float* y,
             int64_t ldy, int in_dim, int out_dim, std::span<const LoraSegment* const> segments,
             std::span<const LoraRef> refs) {
  std::vector<BgmvSegment> plan;
  std::vector<const float*> a_rows;
  std::vector<const float*> b_cols;
  std::vector<ShrinkTask> shrink_tasks;
  std::vector<ExpandTask> expand_tasks;
  int64_t v_size = 0;
  for (const LoraSegment* s : segments) {
    const int bgmv = static_cast<int>(plan.size());
    const int rows = s->row_end - s->row_begin;
    BgmvSegment& b = plan.emplace_back(BgmvSegment{s, v_size, static_cast<int64_t>(a_rows.size()), 0});
    for (int ref = s->refs_begin; ref < s->refs_end; ++ref) {
      const LoraRef& lr = refs[ref];
      for (int k = 0; k < lr.rank; ++k) {
        a_rows.push_back(pool + lr.a_rows[k]);
        b_cols.push_back(pool + lr.b_cols[k]);
      }
      for (int k = 0; k < lr.rank; k += kShrinkTaskRanks) {
        for (int r = 0; r < rows; r += kShrinkTaskRows) {
          shrink_tasks.push_back({bgmv, b.k_total + k, std::min(kShrinkTaskRanks, lr.rank - k),
                                  lr.scale, r, std::min(rows, r + kShrinkTaskRows)});
        }
      }
      b.k_total += lr.rank;
    }
    v_size += static_cast<int64_t>(rows) * b.k_total;
    for (int j = 0; j < out_dim; j += kExpandTaskFeatures)
      expand_tasks.push_back({bgmv, j, std::min(out_dim, j + kExpandTaskFeatures)});
  }
  std::vector<float> v(v_size);

  const int num_shrink = static_cast<int>(shrink_tasks.size());
  const int num_expand = static_cast<int>(expand_tasks.size());
#pragma omp parallel
  {
#pragma omp for schedule(dynamic)
    for (int t = 0; t < num_shrink; ++t) {
      const ShrinkTask& task = shrink_tasks[t];
      const BgmvSegment& b = plan[task.bgmv];
      const int row = b.segment->row_begin + task.row_begin;
      mk.shrink(a_rows.data() + b.k_offset + task.k_begin, task.k_count, x + row * ldx, ldx,
                task.row_end - task.row_begin, in_dim, task.scale,
                v.data() + b.v_offset + task.row_begin * b.k_total + task.k_begin, b.k_total);
    }
#pragma omp for schedule(dynamic)
    for (int t = 0; t < num_expand; ++t) {
      const ExpandTask& task = expand_tasks[t];
      const BgmvSegment& b = plan[task.bgmv];
      const LoraSegment& s = *b.segment;
      mk.expand(b_cols.data() + b.k_offset, b.k_total, v.data() + b.v_offset, b.k_total,
                s.row_end - s.row_begin, task.j_begin, task.j_end, s.out_scale,
                y + s.row_begin * ldy, ldy);
    }
  }
}

// One long segment: gather its refs' pages into dense panels (A scaled, rank-concatenated), then
// v = X A^T and Y += v Bt as OpenBLAS GEMMs, then out_scale.
void RunSgmv(const float* pool, const float* x, int64_t ldx, float* y, int64_t ldy, int in_dim,
             int out_dim, const LoraSegment& s, std::span<const LoraRef> refs,
             std::vector<float>& scratch) {
  struct RankRow {
    const float* a;
    const float* b;
    float scale;
  };
  std::vector<RankRow> rank_rows;
  for (int ref = s.refs_begin; ref < s.refs_end; ++ref) {
    const LoraRef& lr = refs[ref];
    for (int k = 0; k < lr.rank; ++k)
      rank_rows.push_back({pool + lr.a_rows[k], pool + lr.b_cols[k], lr.scale});
  }
  const int k_total = static_cast<int>(rank_rows.size());
  const int rows = s.row_end - s.row_begin;
  scratch.resize(static_cast<size_t>(k_total) * (in_dim + out_dim) +
                 static_cast<size_t>(rows) * k_total);
  float* a_panel = scratch.data();
  float* b_panel = a_panel + static_cast<int64_t>(k_total) * in_dim;
  float* v = b_panel + static_cast<int64_t>(k_total) * out_dim;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < k_total; ++k) {
    const RankRow& rr = rank_rows[k];
    float* a_dst = a_panel + static_cast<int64_t>(k) * in_dim;
    for (int i = 0; i < in_dim; ++i) a_dst[i] = rr.scale * rr.a[i];
    std::copy(rr.b, rr.b + out_dim, b_panel + static_cast<int64_t>(k) * out_dim);
  }
  const float* xs = x + s.row_begin * ldx;
  float* ys = y + s.row_begin * ldy;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, k_total, in_dim, 1.0f, xs, ldx,
              a_panel, in_dim, 0.0f, v, k_total);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, out_dim, k_total, 1.0f, v, k_total,
              b_panel, out_dim, 1.0f, ys, ldy);
  if (s.out_scale != nullptr) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < out_dim; ++j) ys[r * ldy + j] *= s.out_scale[j];
  }
}

}  // namespace

namespace detail {

bool CpuHasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

void LoraApply(const float* pool, const float* x, int64_t ldx, float* y, int64_t ldy, int in_dim,
               int out_dim, std::span<const LoraSegment> segments, std::span<const LoraRef> refs,
               const LoraApplyOptions& options) {
  std::vector<const LoraSegment*> bgmv;
  std::vector<const LoraSegment*> sgmv;
  for (const LoraSegment& s : segments) {
    const bool has_refs = s.refs_end > s.refs_begin;
    if (s.row_end <= s.row_begin || (!has_refs && s.out_scale == nullptr)) continue;
    // A base-only segment with out_scale is a BGMV segment with no ranks: expand only scales.
    (has_refs && s.row_end - s.row_begin >= options.sgmv_min_rows ? sgmv : bgmv).push_back(&s);
  }
  if (!bgmv.empty()) {
    const MicroKernels mk = options.allow_avx2 && CpuHasAvx2Fma()
                                ? lora_internal::Avx2MicroKernels()
                                : lora_internal::PortableMicroKernels();
    RunBgmv(mk, pool, x, ldx, y, ldy, in_dim, out_dim, bgmv, refs);
  }
  std::vector<float> scratch;
  for (const LoraSegment* s : sgmv) RunSgmv(pool, x, ldx, y, ldy, in_dim, out_dim, *s, refs, scratch);
}

}  // namespace detail

void LoraApply(const float* pool, const float* x, int64_t ldx, float* y, int64_t ldy, int in_dim,
               int out_dim, std::span<const LoraSegment> segments, std::span<const LoraRef> refs) {
  detail::LoraApply(pool, x, ldx, y, ldy, in_dim, out_dim, segments, refs, {});
}

}  // namespace loraserve::kernels
