// The CUDA implementation of the op set (runtime/backend/backend.h). Nothing CUDA leaks through
// this header, so the factory (device.cc) and tests include it from plain C++.
//
// Memory: the base weights live in one device allocation sized up front (ReserveWeights), the
// unified KV + adapter pool is one cudaMalloc with the host PagePool's page ids and 4-byte unit
// offsets, activations come from a stream-ordered cache of device buffers, and every step's small
// host tables (token ids, positions, KV slots, attention and LoRA tables) go through one pinned
// staging ring and one cudaMemcpyAsync each. Matrices are bf16 by default (fp16 and fp32 on
// request) and run through cuBLAS with fp32 accumulation and fp32 outputs; everything else is
// fp32. Every CUDA and cuBLAS call is checked and its failure returned as a Status naming it.
//
// Unverified on a GPU: CI and the development machines have nvcc but no GPU, so this compiles
// under the strict flags and is exercised only by tests/gpu/ on a GPU machine.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/cpu_backend.h"

namespace loraserve {

struct CudaBackendOptions {
  int device = 0;
  // kAuto and kBF16: bf16 matrices (an fp16 file stays fp16); kF16: fp16; kF32: fp32.
  WeightDtype weight_dtype = WeightDtype::kAuto;
};

// Number of CUDA devices that answer (0 when the driver or a GPU is missing).
int CudaDeviceCount();

// The backend, or the CUDA error that stopped it (no device, no memory) as a Status.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options,
                                                           std::string* description);

}  // namespace loraserve
