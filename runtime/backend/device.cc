#include "runtime/backend/device.h"

#include "absl/strings/str_cat.h"

#if defined(LORASERVE_WITH_CUDA)
#include "runtime/backend/cuda/cuda_backend.h"
#endif

namespace loraserve {

absl::StatusOr<DeviceKind> ParseDeviceKind(std::string_view name) {
  if (name == "auto") return DeviceKind::kAuto;
  if (name == "cpu") return DeviceKind::kCpu;
  if (name == "cuda" || name == "gpu") return DeviceKind::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("device '", std::string(name), "' is not one of auto, cpu, cuda"));
}

bool BuiltWithCuda() {
#if defined(LORASERVE_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

namespace {

CreatedBackend Cpu(const BackendChoice& choice, std::string_view why) {
  CreatedBackend created;
  created.backend = std::make_unique<CpuBackend>(choice.cpu);
  created.description = absl::StrCat("cpu (", std::string(CpuIsaName(choice.cpu.isa)), " kernels",
                                     std::string(why), ")");
  return created;
}

}  // namespace

absl::StatusOr<CreatedBackend> CreateBackend(const BackendChoice& choice) {
  if (choice.device == DeviceKind::kCpu) return Cpu(choice, "");
#if defined(LORASERVE_WITH_CUDA)
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
#else
  if (choice.device == DeviceKind::kAuto) return Cpu(choice, "; auto: built without CUDA");
  return absl::FailedPreconditionError(
      "--device cuda: this build has no CUDA backend (nvcc was not found when it was built)");
#endif
}

}  // namespace loraserve
