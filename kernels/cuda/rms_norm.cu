// One block per row; a warp-shuffle reduction of the sum of squares, then a scaled copy.
#include "kernels/cuda/rms_norm.cuh"

namespace loraserve::kernels::cuda {
namespace {

// CUDA kernels

constexpr int kThreads = 256;

__global__ void RmsNormKernel(const float* __restrict__ x, int64_t ldx,
                              const float* __restrict__ weight, int dim, float eps,
                              float* __restrict__ y, int64_t ldy) {
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * ldx;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * ldy;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += xr[i] * xr[i];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  __shared__ float warp_sums[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (threadIdx.x == 0) warp_sums[0] = sum;
  }
  __syncthreads();
  const float inv = rsqrtf(warp_sums[0] / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = weight[i] * (xr[i] * inv);
}

}  // namespace

// kernel launchers

cudaError_t RmsNorm(const float* x, int64_t ldx, const float* weight, int rows, int dim, float eps,
                    float* y, int64_t ldy, cudaStream_t stream) {
  if (rows < 0 || dim < 1) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<<<rows, kThreads, 0, stream>>>(x, ldx, weight, dim, eps, y, ldy);
  return cudaGetLastError();
}

cudaError_t RmsNorm(const float* x, const float* weight, int rows, int dim, float eps, float* y,
                    cudaStream_t stream) {
  return RmsNorm(x, dim, weight, rows, dim, eps, y, dim, stream);
}

}  // namespace loraserve::kernels::cuda
