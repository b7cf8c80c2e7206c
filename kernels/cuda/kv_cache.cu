// One block per row; threads stride over the kv_dim floats of K and then V.
#include "kernels/cuda/kv_cache.cuh"

namespace loraserve::kernels::cuda {
namespace {

// CUDA kernels

constexpr int kThreads = 128;

__global__ void StoreKvKernel(float* __restrict__ pool, KvPageLayout layout, int layer,
                              const int32_t* __restrict__ row_slots, const float* __restrict__ k,
                              const float* __restrict__ v, int64_t ld) {
  const int row = blockIdx.x;
  if (row_slots[row] < 0) return;  // a padding row of a graph step: no sequence, no cache
  const int32_t page = row_slots[row] / layout.block_size;
  const int slot = row_slots[row] % layout.block_size;
  float* k_dst = pool + layout.Offset(page, layer, 0, slot);
  float* v_dst = pool + layout.Offset(page, layer, 1, slot);
  const float* k_src = k + row * ld;
  const float* v_src = v + row * ld;
  for (int i = threadIdx.x; i < layout.kv_dim; i += blockDim.x) {
    k_dst[i] = k_src[i];
    v_dst[i] = v_src[i];
  }
}

}  // namespace

// kernel launchers

cudaError_t StoreKv(float* pool, KvPageLayout layout, int layer, const int32_t* row_slots,
                    const float* k, const float* v, int64_t ld, int rows, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows < 0 || layout.block_size < 1 || layout.kv_dim < 1) return cudaErrorInvalidValue;
  StoreKvKernel<<<rows, kThreads, 0, stream>>>(pool, layout, layer, row_slots, k, v, ld);
  return cudaGetLastError();
}

}  // namespace loraserve::kernels::cuda
