// CUDA RMSNorm: the first kernel of the CUDA backend. Launchers return cudaError_t and never
// abort, so the runtime can turn failures into absl::Status.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace loraserve::kernels::cuda {

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, fp32, one block per row; rows of x and y
// lie ldx and ldy floats apart (kernels/cpu's RmsNorm signature).
cudaError_t RmsNorm(const float* x, int64_t ldx, const float* weight, int rows, int dim, float eps,
                    float* y, int64_t ldy, cudaStream_t stream);

// The same for contiguous rows (ldx = ldy = dim).
cudaError_t RmsNorm(const float* x, const float* weight, int rows, int dim, float eps, float* y,
                    cudaStream_t stream);

}  // namespace loraserve::kernels::cuda
