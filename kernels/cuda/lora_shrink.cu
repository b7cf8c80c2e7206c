// LoRA shrink: one CTA per (work item, K chunk). The item's x rows for the chunk are staged in
// shared memory once; each warp streams whole rank rows (gathered by pool offset, any dtype)
// and keeps one accumulator per row, so each A element is read once per item, not once per row.
// Results go to the fp32 partials buffer, one slot per chunk: split-K without atomics.
#include "kernels/cuda/lora.cuh"

namespace loraserve::kernels::cuda {
namespace {

// CUDA kernels

constexpr int kShrinkWarps = 4;
constexpr int kShrinkThreads = kShrinkWarps * 32;

// Dot products of one rank row with the kRows staged x rows over [i0, i1), this lane's share.
// `dtype` is a constant at each call site, so the element load has no branch in the loop.
template <int kRows>
__device__ __forceinline__ void DotRankRow(const float* __restrict__ pool, const LoraRankRow& row,
                                           int32_t dtype, const float (*xs)[kLoraKChunk], int i0,
                                           int i1, int lane, float (&acc)[kRows]) {
  for (int i = i0 + lane; i < i1; i += 32) {
    const float a = LoadLoraElement(pool, row.a_off, dtype, i);
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[r] = fmaf(a, xs[r][i - i0], acc[r]);
  }
}

template <int kRows>
__global__ void __launch_bounds__(kShrinkThreads)
    LoraShrinkKernel(const float* __restrict__ pool, LoraTables t,
                     const LoraShrinkItem* __restrict__ items, const float* __restrict__ x,
                     int64_t ldx, int in_dim, float* __restrict__ partials) {
  const LoraShrinkItem item = items[blockIdx.x];
  if (LoraIsEmpty(item)) return;  // a neutralised tail entry
  const LoraSegmentEntry seg = t.segments[item.segment];
  const int chunk = static_cast<int>(blockIdx.y);
  const int i0 = LoraKChunkBegin(chunk);
  const int i1 = LoraKChunkEnd(chunk, in_dim);
  const int rows = item.row_end - item.row_begin;

  __shared__ float xs[kRows][kLoraKChunk];
  for (int idx = threadIdx.x; idx < kRows * kLoraKChunk; idx += kShrinkThreads) {
    const int r = idx / kLoraKChunk;
    const int i = idx % kLoraKChunk;
    xs[r][i] = r < rows && i0 + i < i1 ? x[(item.row_begin + r) * ldx + i0 + i] : 0.0f;
  }
  __syncthreads();

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  for (int rr = item.rr_begin + warp; rr < item.rr_end; rr += kShrinkWarps) {
    const LoraRankRow row = t.rank_rows[rr];
    float acc[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
    switch (row.dtype) {
      case static_cast<int32_t>(LoraDtype::kBF16):
        DotRankRow<kRows>(pool, row, static_cast<int32_t>(LoraDtype::kBF16), xs, i0, i1, lane, acc);
        break;
      case static_cast<int32_t>(LoraDtype::kF16):
        DotRankRow<kRows>(pool, row, static_cast<int32_t>(LoraDtype::kF16), xs, i0, i1, lane, acc);
        break;
      default:
        DotRankRow<kRows>(pool, row, static_cast<int32_t>(LoraDtype::kF32), xs, i0, i1, lane, acc);
        break;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      for (int offset = 16; offset > 0; offset /= 2) {
        acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], offset);
      }
    }
    if (lane == 0) {
      const int k = rr - seg.rr_begin;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r < rows) {
          partials[LoraPartialIndex(chunk, t.capacity.v_floats,
                                    LoraVIndex(seg, item.row_begin + r, k))] = row.scale * acc[r];
        }
      }
    }
  }
}

template <int kRows>
cudaError_t LaunchShrink(const float* pool, const LoraTables& t, const LoraShrinkItem* items,
                         int32_t capacity, const float* x, int64_t ldx, int in_dim, float* partials,
                         cudaStream_t stream) {
  if (capacity == 0) return cudaSuccess;
  const LoraGrid g = LoraShrinkGrid(capacity, in_dim);
  LoraShrinkKernel<kRows><<<dim3(g.x, g.y, g.z), kShrinkThreads, 0, stream>>>(
      pool, t, items, x, ldx, in_dim, partials);
  return cudaGetLastError();
}

}  // namespace

// kernel launchers

cudaError_t LoraShrink(const float* pool, const LoraTables& tables, const float* x, int64_t ldx,
                       int in_dim, float* partials, cudaStream_t stream) {
  if (in_dim <= 0 || static_cast<uint32_t>(LoraNumKChunks(in_dim)) > kLoraMaxGridY) {
    return cudaErrorInvalidValue;
  }
  cudaError_t err =
      LaunchShrink<kBgmvRows>(pool, tables, tables.bgmv_shrink, tables.capacity.bgmv_shrink, x, ldx,
                              in_dim, partials, stream);
  if (err != cudaSuccess) return err;
  return LaunchShrink<kSgmvRows>(pool, tables, tables.sgmv_shrink, tables.capacity.sgmv_shrink, x,
                                 ldx, in_dim, partials, stream);
}

}  // namespace loraserve::kernels::cuda
