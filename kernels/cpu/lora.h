// CPU LoRA kernels over the paged adapter layout: y += sum_i s_i * B_i (A_i x) per row segment.
// BGMV (short segments, decode) streams each adapter's pages once through SIMD micro-kernels;
// SGMV (long segments, prefill) shrinks whole row blocks in cache-sized depth blocks.
// Design and measurements: docs/kernels_lora.md.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/plan/lora_plan.h"

namespace loraserve::kernels {

// y[r, :] += sum_{ref in segment(r)} ref.scale * B_ref (A_ref x[r, :]) for every row r in every
// segment, then y[r, :] *= out_scale when the segment has one.
// x: rows x in_dim with leading dimension ldx; y: rows x out_dim with leading dimension ldy.
// Segments shorter than kSgmvMinRows take the BGMV path, longer ones the SGMV path. Runs on the
// OpenMP thread team (never OpenBLAS); AVX-512 or AVX2+FMA micro-kernels when the CPU has them.
// A weighted set may mix refs of different dtypes.
void LoraApply(const float* pool, const float* x, int64_t ldx, float* y, int64_t ldy, int in_dim,
               int out_dim, std::span<const LoraSegment> segments, std::span<const LoraRef> refs);

// One module's LoRA work for LoraApplyFused: its output and its segment table.
struct LoraTarget {
  float* y;
  int64_t ldy;
  int out_dim;
  std::span<const LoraSegment> segments;
  std::span<const LoraRef> refs;
};

// LoraApply for several modules that read the same x (q/k/v, gate/up) in one parallel region:
// one fork/join and two barriers instead of one region per module. Same results.
void LoraApplyFused(const float* pool, const float* x, int64_t ldx, int in_dim,
                    std::span<const LoraTarget> targets);

// The obviously-correct scalar version (double accumulation, no threads); the tests' oracle.
void LoraApplyReference(const float* pool, const float* x, int64_t ldx, float* y, int64_t ldy,
                        int in_dim, int out_dim, std::span<const LoraSegment> segments,
                        std::span<const LoraRef> refs);

// One adapter as dense row-major matrices, the layout of a PEFT checkpoint.
struct DenseLora {
  int rank;
  float scale;
  const float* a;  // rank x in_dim
  const float* b;  // out_dim x rank
};

// The naive per-request loop the kernels are measured against: for every row, cblas_sgemv
// v = A x, then cblas_sgemv y += scale * B v. row_adapter[r] indexes `adapters`, or is -1 for a
// base-only row.
void NaivePerRequestLora(const float* x, int64_t ldx, float* y, int64_t ldy, int in_dim,
                         int out_dim, std::span<const int> row_adapter,
                         std::span<const DenseLora> adapters);

// Segments with at least this many rows take the SGMV path (chosen from lora_bench's
// BM_LoraPathCrossover, see docs/kernels_lora.md).
inline constexpr int kSgmvMinRows = 64;

// An SGMV shrink task covers at most this many rank rows of one ref, so a rank-512 adapter's A
// rows are split into L2-sized chunks that also spread across threads (docs/kernels_lora.md,
// "Ranks up to 512"). Ranks up to it keep one task per row block.
inline constexpr int kSgmvTaskRanks = 64;

namespace detail {

// Test and benchmark hooks: force narrower micro-kernels, move the BGMV/SGMV threshold, or
// resize SGMV's rank chunks.
struct LoraApplyOptions {
  bool allow_avx512 = true;
  bool allow_avx2 = true;
  int sgmv_min_rows = kSgmvMinRows;
  int sgmv_task_ranks = kSgmvTaskRanks;
};

void LoraApply(const float* pool, const float* x, int64_t ldx, float* y, int64_t ldy, int in_dim,
               int out_dim, std::span<const LoraSegment> segments, std::span<const LoraRef> refs,
               const LoraApplyOptions& options);

void LoraApplyFused(const float* pool, const float* x, int64_t ldx, int in_dim,
                    std::span<const LoraTarget> targets, const LoraApplyOptions& options);

// Whether the CPU (and OS) support the AVX2+FMA+F16C, and the AVX-512 (F, BW) micro-kernels.
bool CpuHasAvx2Fma();
bool CpuHasAvx512();

}  // namespace detail

}  // namespace loraserve::kernels
