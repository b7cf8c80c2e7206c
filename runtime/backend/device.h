// Which backend runs the forward pass: `--device cuda|cpu|auto`. auto takes the CUDA backend when
// this binary has it and a GPU answers, else the CPU backend; the returned description says
// which and why, for the log. Compiles with or without CUDA: the CUDA backend's objects are
// linked only into the binaries that serve on a GPU (loraserve-cuda), which define the functions
// device.cc declares weak.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/cpu_backend.h"

namespace loraserve {

enum class DeviceKind { kAuto, kCpu, kCuda };

absl::StatusOr<DeviceKind> ParseDeviceKind(std::string_view name);  // auto|cpu|cuda

struct BackendChoice {
  DeviceKind device = DeviceKind::kAuto;
  CpuBackendOptions cpu;
  int cuda_device = 0;  // the GPU ordinal for the CUDA backend
};

struct CreatedBackend {
  std::unique_ptr<Backend> backend;
  std::string description;  // e.g. "cuda (NVIDIA H200, sm_90, 139 GiB)" or "cpu (avx512 kernels)"
};

// FAILED_PRECONDITION when cuda is asked for and this build or machine has none.
absl::StatusOr<CreatedBackend> CreateBackend(const BackendChoice& choice);

// Whether this binary has the CUDA backend linked in (loraserve-cuda does, loraserve does not).
bool BuiltWithCuda();

}  // namespace loraserve
