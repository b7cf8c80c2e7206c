// Grid-stride element loops: these run once per merge or per matmul input, bandwidth-bound.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/weights.cuh"

namespace loraserve::kernels::cuda {
namespace {

// CUDA kernels

constexpr int kThreads = 256;

unsigned BlocksFor(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 * 16 ? (blocks > 0 ? blocks : 1) : 65536 * 16);
}

__global__ void WidenKernel(const uint16_t* __restrict__ in, bool bf16, int64_t n,
                            float* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint16_t bits = in[i];
    out[i] = bf16 ? __uint_as_float(static_cast<uint32_t>(bits) << 16)
                  : __half2float(__ushort_as_half(bits));
  }
}

__global__ void NarrowKernel(const float* __restrict__ in, int64_t ld, int64_t cols, int64_t n,
                             bool bf16, uint16_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = in[(i / cols) * ld + i % cols];
    out[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v))
                  : __half_as_ushort(__float2half_rn(v));
  }
}

__global__ void ScaleRowsKernel(float* __restrict__ w, int64_t cols, int64_t n,
                                const float* __restrict__ scale) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    w[i] *= scale[i / cols];
  }
}

}  // namespace

// kernel launchers

cudaError_t WidenToF32(const uint16_t* in, bool bf16, int64_t n, float* out, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  WidenKernel<<<BlocksFor(n), kThreads, 0, stream>>>(in, bf16, n, out);
  return cudaGetLastError();
}

cudaError_t NarrowRows(const float* in, int64_t ld, int64_t rows, int64_t cols, bool bf16,
                       uint16_t* out, cudaStream_t stream) {
  if (rows < 0 || cols < 0 || ld < cols) return cudaErrorInvalidValue;
  if (rows == 0 || cols == 0) return cudaSuccess;
  NarrowKernel<<<BlocksFor(rows * cols), kThreads, 0, stream>>>(in, ld, cols, rows * cols, bf16,
                                                                 out);
  return cudaGetLastError();
}

cudaError_t ScaleRows(float* w, int64_t rows, int64_t cols, const float* scale,
                      cudaStream_t stream) {
  if (rows < 0 || cols < 0) return cudaErrorInvalidValue;
  if (rows == 0 || cols == 0) return cudaSuccess;
  ScaleRowsKernel<<<BlocksFor(rows * cols), kThreads, 0, stream>>>(w, cols, rows * cols, scale);
  return cudaGetLastError();
}

}  // namespace loraserve::kernels::cuda
