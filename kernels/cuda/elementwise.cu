// One block per row for every op: rows are the unit the callers' leading dimensions describe,
// a row is wide enough (hidden size, vocab) to keep a block busy, and grid.x = rows never hits
// the 65535 limit of the other grid dimensions. These ops are a few percent of a step's bytes,
// so plain coalesced loops are enough.
#include <cuda_fp16.h>

#include <climits>

#include "kernels/cuda/elementwise.cuh"

namespace loraserve::kernels::cuda {
namespace {

// CUDA kernels

constexpr int kThreads = 256;

template <DType kDtype>
__device__ __forceinline__ float LoadWidened(const void* table, int64_t i) {
  if constexpr (kDtype == DType::kF32) {
    return static_cast<const float*>(table)[i];
  } else if constexpr (kDtype == DType::kF16) {
    return __half2float(__ushort_as_half(static_cast<const uint16_t*>(table)[i]));
  } else {
    // bf16 is the top half of an fp32, so widening is a shift (exact, as formats/half.h).
    return __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(table)[i]) << 16);
  }
}

template <DType kDtype>
__global__ void __launch_bounds__(kThreads)
    EmbedKernel(const void* __restrict__ table, int64_t ld_table, int64_t vocab,
                const int32_t* __restrict__ ids, int dim, float* __restrict__ out, int64_t ldo) {
  const int64_t row = blockIdx.x;
  const int32_t id = ids[row];
  const bool valid = id >= 0 && id < vocab;
  float* o = out + row * ldo;
  for (int c = threadIdx.x; c < dim; c += kThreads) {
    o[c] = valid ? LoadWidened<kDtype>(table, id * ld_table + c) : 0.0f;
  }
}

__global__ void __launch_bounds__(kThreads)
    GatherRowsKernel(const float* __restrict__ x, int64_t ldx, int64_t x_rows,
                     const int32_t* __restrict__ idx, int cols, float* __restrict__ out,
                     int64_t ldo) {
  const int64_t row = blockIdx.x;
  const int32_t src = idx[row];
  const bool valid = src >= 0 && src < x_rows;
  float* o = out + row * ldo;
  for (int c = threadIdx.x; c < cols; c += kThreads) o[c] = valid ? x[src * ldx + c] : 0.0f;
}

__global__ void __launch_bounds__(kThreads)
    AddBiasKernel(float* __restrict__ y, int64_t ldy, int cols, const float* __restrict__ bias) {
  float* yr = y + static_cast<int64_t>(blockIdx.x) * ldy;
  for (int c = threadIdx.x; c < cols; c += kThreads) yr[c] += bias[c];
}

// Each thread owns pairs (i, i + half) of one head; the angle is recomputed per head rather
// than staged, since sin/cos of a few thousand values per row costs less than a barrier.
__global__ void __launch_bounds__(kThreads)
    RopeKernel(float* __restrict__ x, int64_t ldx, int num_heads, int head_dim,
               const int32_t* __restrict__ positions, const float* __restrict__ inv_freq) {
  const int half = head_dim / 2;
  float* row = x + static_cast<int64_t>(blockIdx.x) * ldx;
  const float pos = static_cast<float>(positions[blockIdx.x]);
  for (int p = threadIdx.x; p < num_heads * half; p += kThreads) {
    const int h = p / half;
    const int i = p % half;
    const float angle = pos * inv_freq[i];
    const float c = cosf(angle);
    const float s = sinf(angle);
    float* v = row + h * head_dim;
    const float a = v[i];
    const float b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

__global__ void __launch_bounds__(kThreads)
    SiluMulKernel(const float* __restrict__ gate, int64_t ldg, const float* __restrict__ up,
                  int64_t ldu, int cols, float* __restrict__ out, int64_t ldo) {
  const int64_t row = blockIdx.x;
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    const float g = gate[row * ldg + c];
    out[row * ldo + c] = g / (1.0f + expf(-g)) * up[row * ldu + c];
  }
}

// x and y may not alias (x += x is not an op the model needs), hence __restrict__.
__global__ void __launch_bounds__(kThreads)
    AddKernel(float* __restrict__ x, int64_t ldx, const float* __restrict__ y, int64_t ldy,
              int cols) {
  const int64_t row = blockIdx.x;
  for (int c = threadIdx.x; c < cols; c += kThreads) x[row * ldx + c] += y[row * ldy + c];
}

// (v, i) beats (w, j) when larger, or equal at a lower index: the first maximum, as
// std::max_element finds it.
__device__ __forceinline__ bool Beats(float v, int i, float w, int j) {
  return v > w || (v == w && i < j);
}

__global__ void __launch_bounds__(kThreads)
    ArgmaxKernel(const float* __restrict__ logits, int64_t ld, int cols,
                 int32_t* __restrict__ out) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * ld;
  // INT_MAX loses every tie, so a row of -inf still picks its first index.
  float best = -INFINITY;
  int best_i = INT_MAX;
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    const float v = row[c];
    if (Beats(v, c, best, best_i)) {
      best = v;
      best_i = c;
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    const float v = __shfl_xor_sync(0xffffffffu, best, offset);
    const int i = __shfl_xor_sync(0xffffffffu, best_i, offset);
    if (Beats(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
  __shared__ float warp_best[kThreads / 32];
  __shared__ int warp_index[kThreads / 32];
  if (threadIdx.x % 32 == 0) {
    warp_best[threadIdx.x / 32] = best;
    warp_index[threadIdx.x / 32] = best_i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      if (Beats(warp_best[w], warp_index[w], best, best_i)) {
        best = warp_best[w];
        best_i = warp_index[w];
      }
    }
    out[blockIdx.x] = best_i;
  }
}

// formats/half.h's FloatToBf16 with the bit casts as intrinsics (its memcpy would put a word on
// the stack in device code).
__device__ __forceinline__ uint16_t ToBf16Bits(float value) {
  const uint32_t word = __float_as_uint(value);
  if ((word & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((word >> 16) | 0x40);
  const uint32_t rounding = 0x7fffu + ((word >> 16) & 1u);
  return static_cast<uint16_t>((word + rounding) >> 16);
}

__global__ void __launch_bounds__(kThreads)
    CastF32ToBf16Kernel(const float* __restrict__ x, int64_t ldx, int cols,
                        uint16_t* __restrict__ out) {
  const int64_t row = blockIdx.x;
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    out[row * cols + c] = ToBf16Bits(x[row * ldx + c]);
  }
}

__global__ void __launch_bounds__(kThreads)
    CastF32ToF16Kernel(const float* __restrict__ x, int64_t ldx, int cols,
                       uint16_t* __restrict__ out) {
  const int64_t row = blockIdx.x;
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    out[row * cols + c] = __half_as_ushort(__float2half_rn(x[row * ldx + c]));
  }
}

bool BadRows(int rows, int cols) { return rows < 0 || cols < 0; }

}  // namespace

// kernel launchers

cudaError_t Embed(const void* table, DType dtype, int64_t ld_table, int64_t vocab,
                  const int32_t* ids, int rows, int dim, float* out, int64_t ldo,
                  cudaStream_t stream) {
  if (BadRows(rows, dim) || vocab < 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kF32:
      EmbedKernel<DType::kF32>
          <<<rows, kThreads, 0, stream>>>(table, ld_table, vocab, ids, dim, out, ldo);
      break;
    case DType::kBF16:
      EmbedKernel<DType::kBF16>
          <<<rows, kThreads, 0, stream>>>(table, ld_table, vocab, ids, dim, out, ldo);
      break;
    case DType::kF16:
      EmbedKernel<DType::kF16>
          <<<rows, kThreads, 0, stream>>>(table, ld_table, vocab, ids, dim, out, ldo);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t GatherRows(const float* x, int64_t ldx, int64_t x_rows, const int32_t* idx, int rows,
                       int cols, float* out, int64_t ldo, cudaStream_t stream) {
  if (BadRows(rows, cols)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  GatherRowsKernel<<<rows, kThreads, 0, stream>>>(x, ldx, x_rows, idx, cols, out, ldo);
  return cudaGetLastError();
}

cudaError_t AddBias(float* y, int64_t ldy, int rows, int cols, const float* bias,
                    cudaStream_t stream) {
  if (BadRows(rows, cols)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  AddBiasKernel<<<rows, kThreads, 0, stream>>>(y, ldy, cols, bias);
  return cudaGetLastError();
}

cudaError_t Rope(float* x, int64_t ldx, int rows, int num_heads, int head_dim,
                 const int32_t* positions, const float* inv_freq, cudaStream_t stream) {
  if (rows < 0 || num_heads < 0 || head_dim < 0 || head_dim % 2 != 0) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  RopeKernel<<<rows, kThreads, 0, stream>>>(x, ldx, num_heads, head_dim, positions, inv_freq);
  return cudaGetLastError();
}

cudaError_t SiluMul(const float* gate, int64_t ldg, const float* up, int64_t ldu, int rows,
                    int cols, float* out, int64_t ldo, cudaStream_t stream) {
  if (BadRows(rows, cols)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  SiluMulKernel<<<rows, kThreads, 0, stream>>>(gate, ldg, up, ldu, cols, out, ldo);
  return cudaGetLastError();
}

cudaError_t Add(float* x, int64_t ldx, const float* y, int64_t ldy, int rows, int cols,
                cudaStream_t stream) {
  if (BadRows(rows, cols)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  AddKernel<<<rows, kThreads, 0, stream>>>(x, ldx, y, ldy, cols);
  return cudaGetLastError();
}

cudaError_t ArgmaxRows(const float* logits, int64_t ld, int rows, int cols, int32_t* out,
                       cudaStream_t stream) {
  if (rows < 0 || cols < 1) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  ArgmaxKernel<<<rows, kThreads, 0, stream>>>(logits, ld, cols, out);
  return cudaGetLastError();
}

cudaError_t CastF32ToBf16(const float* x, int64_t ldx, int rows, int cols, uint16_t* out,
                          cudaStream_t stream) {
  if (BadRows(rows, cols)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  CastF32ToBf16Kernel<<<rows, kThreads, 0, stream>>>(x, ldx, cols, out);
  return cudaGetLastError();
}

cudaError_t CastF32ToF16(const float* x, int64_t ldx, int rows, int cols, uint16_t* out,
                         cudaStream_t stream) {
  if (BadRows(rows, cols)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  CastF32ToF16Kernel<<<rows, kThreads, 0, stream>>>(x, ldx, cols, out);
  return cudaGetLastError();
}

}  // namespace loraserve::kernels::cuda
