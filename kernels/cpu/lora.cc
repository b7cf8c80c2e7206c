// LoraApply: turns the segment table into two flat task lists, shrink then expand, and runs them
// in one OpenMP parallel region (LoraApplyFused: the tables of several modules reading one x,
// q/k/v or gate/up, in one region), so one row x 64 adapters and 63 rows x 1 adapter both split
// across threads. BGMV segments (short) split their shrink by rank rows and stream each A row
// once over the full input; SGMV segments (long) split by row blocks and walk the input in
// L1-sized depth blocks, so x and A tiles are reused across the block's rows and ranks.
// Nothing here calls OpenBLAS: its pthread pool and the OpenMP team spin against each other when
// one call mixes both (measured in docs/kernels_lora.md).
// Rows may be fp32, bf16 or fp16 (LoraRef::dtype): a shrink task covers one ref, so it has one
// dtype; an expand task walks its segment's refs in runs of one dtype, applying out_scale only
// after the last run.
#include "kernels/cpu/lora.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/lora_microkernels.h"

namespace loraserve::kernels {
namespace {

using lora_internal::MicroKernels;

// Task sizes: small enough that every thread gets several tasks in both decode extremes, large
// enough that a task keeps several rows streaming at once (8 rank rows of 4096 are 64 KB of fp32,
// 32 KB of bf16; 4 rank rows were 5-15% slower on 1-row segments, a whole rank-16 adapter per
// task left one of two threads idle for a single request). Measured in docs/kernels_lora.md.
constexpr int kBgmvTaskRanks = 8;
constexpr int kBgmvTaskRows = 16;
constexpr int kSgmvTaskRows = 32;
constexpr int kSgmvDepth = 1024;  // a 4-row x tile + a few A rows of 4 KB: inside L1
constexpr int kExpandTaskRows = 64;
constexpr int kExpandTaskFeatures = 512;

// The rank rows of every ref in a segment, concatenated: the shrink writes
// v[row][k_total] (scale folded in) and the expand reads all refs' B columns in one pass per
// dtype run, so a weighted set of one dtype costs one read-modify-write of y and out_scale sees
// the full sum.
struct SegmentPlan {
  const LoraSegment* segment;
  float* y;  // the segment's target module output, with ldy
  int64_t ldy;
  int64_t v_offset;  // into v: rows x k_total
  int64_t k_offset;  // into a_rows / b_cols: k_total
  int k_total;
  int runs_begin, runs_end;  // into the dtype runs
};

// Consecutive ranks of one segment stored in one dtype.
struct DtypeRun {
  int k_begin, k_count;
  LoraDtype dtype;
};

struct ShrinkTask {
  int plan;
  int k_begin;  // within the segment's concatenated ranks
  int k_count;
  float scale;
  LoraDtype dtype;
  int row_begin, row_end;  // relative to the segment
  int depth;               // input features per pass
};

struct ExpandTask {
  int plan;
  int row_begin, row_end;  // relative to the segment
  int j_begin, j_end;
};

}  // namespace

namespace detail {

bool CpuHasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}

bool CpuHasAvx512() {
  // libgcc also checks that the OS saves the AVX-512 register state (XCR0).
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

}  // namespace detail

namespace lora_internal {

const MicroKernels* SimdMicroKernels(bool allow_avx512, bool allow_avx2) {
  static const MicroKernels avx512 =
      detail::CpuHasAvx512() ? Avx512MicroKernels() : MicroKernels{};
  static const MicroKernels avx2 = detail::CpuHasAvx2Fma() ? Avx2MicroKernels() : MicroKernels{};
  if (allow_avx512 && avx512.shrink[0] != nullptr) return &avx512;
  if (allow_avx2 && avx2.shrink[0] != nullptr) return &avx2;
  return nullptr;
}

}  // namespace lora_internal

namespace detail {

void LoraApply(const float* pool, const float* x, int64_t ldx, float* y, int64_t ldy, int in_dim,
               int out_dim, std::span<const LoraSegment> segments, std::span<const LoraRef> refs,
               const LoraApplyOptions& options) {
  const LoraTarget target{y, ldy, out_dim, segments, refs};
  LoraApplyFused(pool, x, ldx, in_dim, {&target, 1}, options);
}

void LoraApplyFused(const float* pool, const float* x, int64_t ldx, int in_dim,
                    std::span<const LoraTarget> targets, const LoraApplyOptions& options) {
  std::vector<SegmentPlan> plans;
  std::vector<DtypeRun> runs;
  std::vector<const void*> a_rows;
  std::vector<const void*> b_cols;
  std::vector<ShrinkTask> shrink_tasks;
  std::vector<ExpandTask> expand_tasks;
  int64_t v_size = 0;
  for (const LoraTarget& target : targets) {
  const int out_dim = target.out_dim;
  const std::span<const LoraRef> refs = target.refs;
  for (const LoraSegment& s : target.segments) {
    const int rows = s.row_end - s.row_begin;
    // Base-only rows without out_scale are never touched; with out_scale they get a zero-rank
    // expand, which only multiplies.
    if (rows <= 0 || (s.refs_end == s.refs_begin && s.out_scale == nullptr)) continue;
    const int plan = static_cast<int>(plans.size());
    const bool sgmv = rows >= options.sgmv_min_rows;
    const int runs_begin = static_cast<int>(runs.size());
    SegmentPlan& p = plans.emplace_back(SegmentPlan{&s, target.y, target.ldy, v_size,
                                                    std::ssize(a_rows), 0, runs_begin,
                                                    runs_begin});
    for (int ref = s.refs_begin; ref < s.refs_end; ++ref) {
      const LoraRef& lr = refs[ref];
      for (int k = 0; k < lr.rank; ++k) {
        a_rows.push_back(pool + lr.a_rows[k]);
        b_cols.push_back(pool + lr.b_cols[k]);
      }
      if (sgmv) {
        for (int r = 0; r < rows; r += kSgmvTaskRows)
          for (int k = 0; k < lr.rank; k += options.sgmv_task_ranks)
            shrink_tasks.push_back({plan, p.k_total + k,
                                    std::min(options.sgmv_task_ranks, lr.rank - k), lr.scale,
                                    lr.dtype, r, std::min(rows, r + kSgmvTaskRows), kSgmvDepth});
      } else {
        for (int k = 0; k < lr.rank; k += kBgmvTaskRanks)
          for (int r = 0; r < rows; r += kBgmvTaskRows)
            shrink_tasks.push_back({plan, p.k_total + k, std::min(kBgmvTaskRanks, lr.rank - k),
                                    lr.scale, lr.dtype, r, std::min(rows, r + kBgmvTaskRows),
                                    in_dim});
      }
      if (runs.size() > static_cast<size_t>(runs_begin) && runs.back().dtype == lr.dtype) {
        runs.back().k_count += lr.rank;
      } else {
        runs.push_back({p.k_total, lr.rank, lr.dtype});
      }
      p.k_total += lr.rank;
    }
    // A segment without refs still needs one (empty) run to apply its out_scale.
    if (runs.size() == static_cast<size_t>(runs_begin)) runs.push_back({0, 0, LoraDtype::kF32});
    p.runs_end = static_cast<int>(runs.size());
    v_size += static_cast<int64_t>(rows) * p.k_total;
    for (int r = 0; r < rows; r += kExpandTaskRows)
      for (int j = 0; j < out_dim; j += kExpandTaskFeatures)
        expand_tasks.push_back({plan, r, std::min(rows, r + kExpandTaskRows), j,
                                std::min(out_dim, j + kExpandTaskFeatures)});
  }
  }
  if (plans.empty()) return;
  std::vector<float> v(v_size);
  static const MicroKernels portable = lora_internal::PortableMicroKernels();
  const MicroKernels* simd =
      lora_internal::SimdMicroKernels(options.allow_avx512, options.allow_avx2);
  const MicroKernels& mk = simd != nullptr ? *simd : portable;

  const int num_shrink = static_cast<int>(shrink_tasks.size());
  const int num_expand = static_cast<int>(expand_tasks.size());
#pragma omp parallel
  {
#pragma omp for schedule(dynamic)
    for (int t = 0; t < num_shrink; ++t) {
      const ShrinkTask& task = shrink_tasks[t];
      const SegmentPlan& p = plans[task.plan];
      const float* xs = x + (p.segment->row_begin + task.row_begin) * ldx;
      float* out = v.data() + p.v_offset + task.row_begin * p.k_total + task.k_begin;
      for (int i = 0; i < in_dim; i += task.depth) {
        mk.shrink[static_cast<int>(task.dtype)](
            a_rows.data() + p.k_offset + task.k_begin, task.k_count, xs, ldx,
            task.row_end - task.row_begin, i, std::min(in_dim, i + task.depth), task.scale,
            /*accumulate=*/i > 0, out, p.k_total);
      }
    }
#pragma omp for schedule(dynamic)
    for (int t = 0; t < num_expand; ++t) {
      const ExpandTask& task = expand_tasks[t];
      const SegmentPlan& p = plans[task.plan];
      for (int run = p.runs_begin; run < p.runs_end; ++run) {
        const DtypeRun& dr = runs[run];
        mk.expand[static_cast<int>(dr.dtype)](
            b_cols.data() + p.k_offset + dr.k_begin, dr.k_count,
            v.data() + p.v_offset + task.row_begin * p.k_total + dr.k_begin, p.k_total,
            task.row_end - task.row_begin, task.j_begin, task.j_end,
            run + 1 == p.runs_end ? p.segment->out_scale : nullptr,
            p.y + (p.segment->row_begin + task.row_begin) * p.ldy, p.ldy);
      }
    }
  }
}

}  // namespace detail

void LoraApply(const float* pool, const float* x, int64_t ldx, float* y, int64_t ldy, int in_dim,
               int out_dim, std::span<const LoraSegment> segments, std::span<const LoraRef> refs) {
  detail::LoraApply(pool, x, ldx, y, ldy, in_dim, out_dim, segments, refs, {});
}

void LoraApplyFused(const float* pool, const float* x, int64_t ldx, int in_dim,
                    std::span<const LoraTarget> targets) {
  detail::LoraApplyFused(pool, x, ldx, in_dim, targets, {});
}

}  // namespace loraserve::kernels
