// LoRA expand: one CTA per work item (rows x 256 output features), one thread per feature.
// The segment's v = sum over K chunks of the shrink partials is staged in shared memory
// kLoraExpandRanks rank rows at a time, together with those rows' B offsets; each thread then
// walks the B columns at its feature. A thread owns its y elements for the whole sum, so the
// DoRA factor applies once, after every ref, with no atomics.
#include "kernels/cuda/lora.cuh"

namespace loraserve::kernels::cuda {
namespace {

// CUDA kernels

template <int kRows>
__global__ void __launch_bounds__(kLoraExpandCols)
    LoraExpandKernel(const float* __restrict__ pool, LoraTables t,
                     const LoraExpandItem* __restrict__ items, const float* __restrict__ partials,
                     int num_chunks, float* __restrict__ y, int64_t ldy) {
  const LoraExpandItem item = items[blockIdx.x];
  if (LoraIsEmpty(item)) return;  // a neutralised tail entry
  const LoraSegmentEntry seg = t.segments[item.segment];
  const int rows = item.row_end - item.row_begin;
  const int k_total = LoraSegmentRanks(seg);
  const int col = item.col_begin + static_cast<int>(threadIdx.x);
  const bool active = col < item.col_end;

  __shared__ float vs[kRows][kLoraExpandRanks];
  __shared__ int64_t b_off[kLoraExpandRanks];
  __shared__ int32_t b_dtype[kLoraExpandRanks];
  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;

  // A DoRA-only segment (no refs) skips this loop and only scales.
  for (int kb = 0; kb < k_total; kb += kLoraExpandRanks) {
    const int nk = k_total - kb < kLoraExpandRanks ? k_total - kb : kLoraExpandRanks;
    for (int idx = threadIdx.x; idx < kRows * kLoraExpandRanks; idx += kLoraExpandCols) {
      const int r = idx / kLoraExpandRanks;
      const int k = idx % kLoraExpandRanks;
      float v = 0.0f;
      if (r < rows && k < nk) {
        const int64_t vi = LoraVIndex(seg, item.row_begin + r, kb + k);
        for (int c = 0; c < num_chunks; ++c) {
          v += partials[LoraPartialIndex(c, t.capacity.v_floats, vi)];
        }
      }
      vs[r][k] = v;
    }
    if (static_cast<int>(threadIdx.x) < nk) {
      const LoraRankRow rr = t.rank_rows[seg.rr_begin + kb + static_cast<int>(threadIdx.x)];
      b_off[threadIdx.x] = rr.b_off;
      b_dtype[threadIdx.x] = rr.dtype;
    }
    __syncthreads();
    if (active) {
      for (int k = 0; k < nk; ++k) {
        const float b = LoadLoraElement(pool, b_off[k], b_dtype[k], col);
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[r] = fmaf(vs[r][k], b, acc[r]);
      }
    }
    __syncthreads();
  }
  if (!active) return;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r < rows) {
      float* yp = y + (item.row_begin + r) * ldy + col;
      *yp = LoraExpandFinish(pool, seg.out_scale_off, col, *yp, acc[r]);
    }
  }
}

template <int kRows>
cudaError_t LaunchExpand(const float* pool, const LoraTables& t, const LoraExpandItem* items,
                         int32_t capacity, const float* partials, int num_chunks, float* y,
                         int64_t ldy, cudaStream_t stream) {
  if (capacity == 0) return cudaSuccess;
  const LoraGrid g = LoraExpandGrid(capacity);
  LoraExpandKernel<kRows><<<dim3(g.x, g.y, g.z), kLoraExpandCols, 0, stream>>>(
      pool, t, items, partials, num_chunks, y, ldy);
  return cudaGetLastError();
}

}  // namespace

// kernel launchers

cudaError_t LoraExpand(const float* pool, const LoraTables& tables, const float* partials,
                       int in_dim, float* y, int64_t ldy, int out_dim, cudaStream_t stream) {
  if (in_dim <= 0 || out_dim <= 0) return cudaErrorInvalidValue;
  const int num_chunks = LoraNumKChunks(in_dim);
  cudaError_t err =
      LaunchExpand<kBgmvRows>(pool, tables, tables.bgmv_expand, tables.capacity.bgmv_expand,
                              partials, num_chunks, y, ldy, stream);
  if (err != cudaSuccess) return err;
  return LaunchExpand<kSgmvRows>(pool, tables, tables.sgmv_expand, tables.capacity.sgmv_expand,
                                 partials, num_chunks, y, ldy, stream);
}

cudaError_t LoraApplyDevice(const float* pool, const LoraTables& tables, const float* x,
                            int64_t ldx, int in_dim, float* partials, float* y, int64_t ldy,
                            int out_dim, cudaStream_t stream) {
  cudaError_t err = LoraShrink(pool, tables, x, ldx, in_dim, partials, stream);
  if (err != cudaSuccess) return err;
  return LoraExpand(pool, tables, partials, in_dim, y, ldy, out_dim, stream);
}

}  // namespace loraserve::kernels::cuda
