// Split-KV paged attention. Pass 1: one CTA per (work item, KV head) computes the scores of its
// partition for every query head of the GQA group (each K vector is loaded once per group),
// keeps them in shared memory, takes the exact max and exp-sum, then streams V once. Pass 2:
// one CTA per (row, query head) merges the row's partitions in item order. Both passes run on
// CUDA cores in fp32: decode attention reads ~1 B per FLOP, so it is bound by HBM, not math.
#include <cmath>

#include "kernels/cuda/attention.cuh"

namespace loraserve::kernels::cuda {
namespace {

// CUDA kernels

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
// Positions whose K vectors a warp has in flight at once in the score pass: enough loads
// outstanding to cover HBM latency without large register arrays.
constexpr int kUnroll = 4;
constexpr int kMergeThreads = 128;

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// The head dimension element lane `lane` holds as its e-th value in the score pass: 16-byte
// chunks interleaved across the warp, so every load instruction covers whole 128 B lines.
template <int kHeadDim>
__device__ __forceinline__ int LaneDim(int lane, int e) {
  if constexpr (kHeadDim / 32 >= 4) return (e / 4) * 128 + lane * 4 + e % 4;
  return lane * (kHeadDim / 32) + e;
}

template <int kHeadDim>
__device__ __forceinline__ void LoadLaneK(const float* __restrict__ k, int lane,
                                          float (&out)[kHeadDim / 32]) {
  constexpr int kPerLane = kHeadDim / 32;
  if constexpr (kPerLane >= 4) {
#pragma unroll
    for (int c = 0; c < kPerLane / 4; ++c) {
      const float4 v = *reinterpret_cast<const float4*>(k + c * 128 + lane * 4);
      out[c * 4 + 0] = v.x;
      out[c * 4 + 1] = v.y;
      out[c * 4 + 2] = v.z;
      out[c * 4 + 3] = v.w;
    }
  } else {
    static_assert(kPerLane == 2);
    const float2 v = *reinterpret_cast<const float2*>(k + lane * 2);
    out[0] = v.x;
    out[1] = v.y;
  }
}

// kGroup is the group size rounded up to a power of two (a compile-time bound, so the per-head
// accumulators stay in registers); `group` is the real one.
template <int kHeadDim, int kGroup>
__global__ void __launch_bounds__(kThreads)
    AttentionPartitionKernel(const float* __restrict__ pool, KvPageLayout layout, int layer,
                             AttentionTables t, const float* __restrict__ q, int64_t ldq,
                             int num_heads, int group, float scale, float* __restrict__ scratch) {
  constexpr int kPerLane = kHeadDim / 32;
  // Threads split V's positions when a head is narrower than the block, and V's dims when it
  // is wider.
  constexpr int kSplits = kHeadDim >= kThreads ? 1 : kThreads / kHeadDim;
  constexpr int kDims = kHeadDim >= kThreads ? kHeadDim / kThreads : 1;
  static_assert(kSplits <= 2, "the split reduction reuses the q buffer for one other split");

  const AttentionWorkItem item = t.items[blockIdx.x];
  if (AttentionIsEmpty(item)) return;  // a neutralised tail entry
  const int kv_head = static_cast<int>(blockIdx.y);
  const AttentionSeqEntry seq = t.seqs[item.seq];
  const int n = item.kv_end - item.kv_begin;
  const int first_head = kv_head * group;

  __shared__ __align__(16) float qs[kGroup][kHeadDim];
  __shared__ float ps[kGroup][kAttentionPartition];  // scores, then exp(score - max)
  __shared__ int64_t k_off[kAttentionPartition];

  for (int i = threadIdx.x; i < kGroup * kHeadDim; i += kThreads) {
    const int g = i / kHeadDim;
    const int d = i % kHeadDim;
    qs[g][d] = g < group ? q[item.row * ldq + int64_t{first_head + g} * kHeadDim + d] : 0.0f;
  }
  for (int p = threadIdx.x; p < n; p += kThreads) {
    k_off[p] = AttentionKvOffset(layout, t.block_table, seq, layer, 0, item.kv_begin + p, kv_head,
                                 kHeadDim);
  }
  __syncthreads();

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  for (int p0 = warp * kUnroll; p0 < n; p0 += kWarps * kUnroll) {
    float k[kUnroll][kPerLane];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (p0 + u < n) {
        LoadLaneK<kHeadDim>(pool + k_off[p0 + u], lane, k[u]);
      } else {
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) k[u][e] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        if (g < group) {
          float dot = 0.0f;
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) {
            dot = fmaf(qs[g][LaneDim<kHeadDim>(lane, e)], k[u][e], dot);
          }
          dot = WarpSum(dot);
          if (lane == 0 && p0 + u < n) ps[g][p0 + u] = dot * scale;
        }
      }
    }
  }
  __syncthreads();

  for (int g = warp; g < group; g += kWarps) {
    float m = -INFINITY;
    for (int p = lane; p < n; p += 32) m = fmaxf(m, ps[g][p]);
    m = WarpMax(m);
    float l = 0.0f;
    for (int p = lane; p < n; p += 32) {
      const float e = expf(ps[g][p] - m);
      ps[g][p] = e;
      l += e;
    }
    l = WarpSum(l);
    if (lane == 0) {
      scratch[AttentionPartialMaxIndex(t.capacity, blockIdx.x, first_head + g, num_heads,
                                       kHeadDim)] = m;
      scratch[AttentionPartialSumIndex(t.capacity, blockIdx.x, first_head + g, num_heads,
                                       kHeadDim)] = l;
    }
  }
  __syncthreads();

  const int d0 = static_cast<int>(threadIdx.x) % (kThreads / kSplits);
  const int split = static_cast<int>(threadIdx.x) / (kThreads / kSplits);
  const int64_t v_shift = AttentionValueShift(layout);
  float acc[kGroup][kDims];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
#pragma unroll
    for (int j = 0; j < kDims; ++j) acc[g][j] = 0.0f;
  }
#pragma unroll 4
  for (int p = split; p < n; p += kSplits) {
    const float* v = pool + k_off[p] + v_shift;
    float vv[kDims];
#pragma unroll
    for (int j = 0; j < kDims; ++j) vv[j] = v[d0 + j * kThreads];
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      if (g < group) {
        const float e = ps[g][p];
#pragma unroll
        for (int j = 0; j < kDims; ++j) acc[g][j] = fmaf(e, vv[j], acc[g][j]);
      }
    }
  }

  if constexpr (kSplits == 2) {
    // The second split hands its sums over through the q buffer, which is dead by now; the
    // first adds them in a fixed order.
    if (split == 1) {
#pragma unroll
      for (int g = 0; g < kGroup; ++g) qs[g][d0] = acc[g][0];
    }
    __syncthreads();
    if (split == 0) {
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        if (g < group) {
          scratch[AttentionPartialOutIndex(blockIdx.x, first_head + g, num_heads, kHeadDim) + d0] =
              acc[g][0] + qs[g][d0];
        }
      }
    }
  } else {
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      if (g < group) {
        const int64_t at =
            AttentionPartialOutIndex(blockIdx.x, first_head + g, num_heads, kHeadDim);
#pragma unroll
        for (int j = 0; j < kDims; ++j) scratch[at + d0 + j * kThreads] = acc[g][j];
      }
    }
  }
}

__global__ void __launch_bounds__(kMergeThreads)
    AttentionMergeKernel(AttentionTables t, const float* __restrict__ scratch, int num_heads,
                         int head_dim, float* __restrict__ out, int64_t ldo) {
  const int row = static_cast<int>(blockIdx.x);
  const int head = static_cast<int>(blockIdx.y);
  const AttentionRowItems items = t.row_items[row];
  if (AttentionIsEmpty(items)) return;  // a tail row, or a row in no sequence
  float m = -INFINITY;
  for (int32_t i = items.item_begin; i < items.item_end; ++i) {
    m = fmaxf(m, scratch[AttentionPartialMaxIndex(t.capacity, i, head, num_heads, head_dim)]);
  }
  float l = 0.0f;
  for (int32_t i = items.item_begin; i < items.item_end; ++i) {
    const float mi = scratch[AttentionPartialMaxIndex(t.capacity, i, head, num_heads, head_dim)];
    l = fmaf(scratch[AttentionPartialSumIndex(t.capacity, i, head, num_heads, head_dim)],
             AttentionRescale(mi, m), l);
  }
  float* o = out + row * ldo + int64_t{head} * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += kMergeThreads) {
    float sum = 0.0f;
    for (int32_t i = items.item_begin; i < items.item_end; ++i) {
      const float mi = scratch[AttentionPartialMaxIndex(t.capacity, i, head, num_heads, head_dim)];
      sum = fmaf(scratch[AttentionPartialOutIndex(i, head, num_heads, head_dim) + d],
                 AttentionRescale(mi, m), sum);
    }
    o[d] = sum / l;
  }
}

template <int kHeadDim, int kGroup>
cudaError_t LaunchPartitions(const float* pool, const KvPageLayout& layout, int layer,
                             const AttentionTables& t, const float* q, int64_t ldq, int num_heads,
                             int num_kv_heads, float* scratch, cudaStream_t stream) {
  const AttentionGrid g = AttentionPartitionGrid(t.capacity, num_kv_heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));  // as the CPU computes it
  AttentionPartitionKernel<kHeadDim, kGroup><<<dim3(g.x, g.y, g.z), kThreads, 0, stream>>>(
      pool, layout, layer, t, q, ldq, num_heads, num_heads / num_kv_heads, scale, scratch);
  return cudaGetLastError();
}

// The smallest compiled group bound that holds `group` (3 runs as 4, 7 as 8).
template <int kHeadDim>
cudaError_t LaunchForGroup(const float* pool, const KvPageLayout& layout, int layer,
                           const AttentionTables& t, const float* q, int64_t ldq, int num_heads,
                           int num_kv_heads, float* scratch, cudaStream_t stream) {
  const int group = num_heads / num_kv_heads;
  if (group <= 1) {
    return LaunchPartitions<kHeadDim, 1>(pool, layout, layer, t, q, ldq, num_heads, num_kv_heads,
                                         scratch, stream);
  }
  if (group <= 2) {
    return LaunchPartitions<kHeadDim, 2>(pool, layout, layer, t, q, ldq, num_heads, num_kv_heads,
                                         scratch, stream);
  }
  if (group <= 4) {
    return LaunchPartitions<kHeadDim, 4>(pool, layout, layer, t, q, ldq, num_heads, num_kv_heads,
                                         scratch, stream);
  }
  if (group <= 8) {
    return LaunchPartitions<kHeadDim, 8>(pool, layout, layer, t, q, ldq, num_heads, num_kv_heads,
                                         scratch, stream);
  }
  static_assert(kAttentionMaxGroup == 16);
  return LaunchPartitions<kHeadDim, 16>(pool, layout, layer, t, q, ldq, num_heads, num_kv_heads,
                                        scratch, stream);
}

}  // namespace

// kernel launchers

cudaError_t PagedAttention(const float* pool, const KvPageLayout& layout, int layer,
                           const AttentionTables& tables, const float* q, int64_t ldq,
                           int num_heads, int num_kv_heads, int head_dim, float* scratch,
                           float* out, int64_t ldo, cudaStream_t stream) {
  if (num_heads < 1 || num_kv_heads < 1 || num_heads % num_kv_heads != 0 ||
      num_heads / num_kv_heads > kAttentionMaxGroup || num_heads > kAttentionMaxGridY ||
      layout.block_size < 1 || layer < 0 || layer >= layout.num_layers ||
      int64_t{layout.kv_dim} != int64_t{num_kv_heads} * head_dim ||
      reinterpret_cast<uintptr_t>(pool) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  if (head_dim != 64 && head_dim != 128 && head_dim != 256) return cudaErrorInvalidValue;
  if (tables.capacity.items == 0 || tables.capacity.rows == 0) return cudaSuccess;
  cudaError_t err = cudaSuccess;
  switch (head_dim) {
    case 64:
      err = LaunchForGroup<64>(pool, layout, layer, tables, q, ldq, num_heads, num_kv_heads,
                               scratch, stream);
      break;
    case 128:
      err = LaunchForGroup<128>(pool, layout, layer, tables, q, ldq, num_heads, num_kv_heads,
                                scratch, stream);
      break;
    default:
      err = LaunchForGroup<256>(pool, layout, layer, tables, q, ldq, num_heads, num_kv_heads,
                                scratch, stream);
      break;
  }
  if (err != cudaSuccess) return err;
  const AttentionGrid g = AttentionMergeGrid(tables.capacity, num_heads);
  AttentionMergeKernel<<<dim3(g.x, g.y, g.z), kMergeThreads, 0, stream>>>(
      tables, scratch, num_heads, head_dim, out, ldo);
  return cudaGetLastError();
}

}  // namespace loraserve::kernels::cuda
