#include "runtime/backend/device.h"

#include "absl/strings/str_cat.h"
#include "runtime/backend/cuda/cuda_backend.h"

namespace loraserve {

// Defined by the loraserve_backend_cuda objects (runtime/backend/cuda/) in the binaries built
// with them (loraserve-cuda, the GPU tests); null here in every other binary.
__attribute__((weak)) int CudaDeviceCount();
__attribute__((weak)) absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(
    const CudaBackendOptions& options, std::string* description);

absl::StatusOr<DeviceKind> ParseDeviceKind(std::string_view name) {
  if (name == "auto") return DeviceKind::kAuto;
  if (name == "cpu") return DeviceKind::kCpu;
  if (name == "cuda" || name == "gpu") return DeviceKind::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("device '", std::string(name), "' is not one of auto, cpu, cuda"));
}

bool BuiltWithCuda() { return &CreateCudaBackend != nullptr && &CudaDeviceCount != nullptr; }

namespace {

CreatedBackend Cpu(const BackendChoice& choice, std::string_view why) {
  CreatedBackend created;
  created.backend = std::make_unique<CpuBackend>(choice.cpu);
  created.description =
      absl::StrCat("cpu (", std::string(CpuIsaName(choice.cpu.isa)), " kernels", std::string(why), ")");
  return created;
}

}  // namespace

absl::StatusOr<CreatedBackend> CreateBackend(const BackendChoice& choice) {
  if (choice.device == DeviceKind::kCpu) return Cpu(choice, "");
  if (!BuiltWithCuda()) {
    if (choice.device == DeviceKind::kAuto) {
      return Cpu(choice, "; auto: this binary has no CUDA backend");
    }
    return absl::FailedPreconditionError(
        "--device cuda: this binary has no CUDA backend (use loraserve-cuda, built when nvcc is "
        "found)");
  }
  if (choice.device == DeviceKind::kAuto && CudaDeviceCount() == 0) {
    return Cpu(choice, "; auto: no CUDA device answers");
  }
  CudaBackendOptions options;
  options.device = choice.cuda_device;
  options.weight_dtype = choice.cpu.weight_dtype;
  CreatedBackend created;
  auto backend = CreateCudaBackend(options, &created.description);
  if (!backend.ok()) {
    if (choice.device == DeviceKind::kAuto) {
      return Cpu(choice, absl::StrCat("; auto: the CUDA backend failed to start: ",
                                      backend.status().message()));
    }
    return backend.status();
  }
  created.backend = std::move(*backend);
  return created;
}

}  // namespace loraserve
