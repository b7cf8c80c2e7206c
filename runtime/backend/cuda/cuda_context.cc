#include "runtime/backend/cuda/cuda_context.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace loraserve::cuda_backend {

absl::Status CudaStatus(cudaError_t error, std::string_view call) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(call, ": ", cudaGetErrorName(error), " (", cudaGetErrorString(error), ")");
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  if (error == cudaErrorInvalidValue) return absl::InvalidArgumentError(message);
  if (error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver) {
    return absl::FailedPreconditionError(message);
  }
  return absl::InternalError(message);
}

absl::Status CublasStatus(cublasStatus_t status, std::string_view call) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string message = absl::StrCat(call, ": ", cublasGetStatusName(status), " (",
                                           cublasGetStatusString(status), ")");
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  if (status == CUBLAS_STATUS_INVALID_VALUE) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

void DeviceFree::operator()(void* p) const {
  if (p != nullptr) cudaFree(p);  // a failed free at teardown has no one left to tell
}

void PinnedFree::operator()(void* p) const {
  if (p != nullptr) cudaFreeHost(p);
}

absl::StatusOr<DevicePtr> DeviceAlloc(size_t bytes, std::string_view what) {
  void* p = nullptr;
  if (auto s = CudaStatus(cudaMalloc(&p, bytes > 0 ? bytes : 1),
                          absl::StrCat("cudaMalloc(", bytes, " B for ", what, ")"));
      !s.ok()) {
    return s;
  }
  return DevicePtr(p);
}

absl::StatusOr<std::unique_ptr<StagingRing>> StagingRing::Create(size_t bytes) {
  void* host = nullptr;
  if (auto s = CudaStatus(cudaMallocHost(&host, bytes), "cudaMallocHost(staging ring)"); !s.ok()) {
    return s;
  }
  PinnedPtr pinned(host);
  auto device = DeviceAlloc(bytes, "staging ring");
  if (!device.ok()) return device.status();
  return std::unique_ptr<StagingRing>(
      new StagingRing(std::move(pinned), std::move(*device), bytes));
}

absl::StatusOr<StagingRing::Slot> StagingRing::Take(size_t bytes, cudaStream_t stream) {
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  if (rounded > bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat("staging ring: one op needs ", bytes,
                                                     " B of tables, the ring holds ", bytes_));
  }
  if (next_ + rounded > bytes_) {
    if (auto s = CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize(staging wrap)");
        !s.ok()) {
      return s;
    }
    next_ = 0;
  }
  Slot slot{static_cast<char*>(host_.get()) + next_, static_cast<char*>(device_.get()) + next_,
            next_};
  next_ += rounded;
  return slot;
}

absl::Status StagingRing::Upload(const Slot& slot, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  return CudaStatus(
      cudaMemcpyAsync(slot.device, slot.host, bytes, cudaMemcpyHostToDevice, stream),
      "cudaMemcpyAsync(staged tables)");
}

absl::StatusOr<std::shared_ptr<CudaContext>> CudaContext::Create(int device) {
  auto context = std::make_shared<CudaContext>();
  context->device = device;
  if (auto s = CudaStatus(cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")"));
      !s.ok()) {
    return s;
  }
  if (auto s = CudaStatus(cudaStreamCreateWithFlags(&context->compute, cudaStreamNonBlocking),
                          "cudaStreamCreate(compute)");
      !s.ok()) {
    return s;
  }
  if (auto s = CudaStatus(cudaStreamCreateWithFlags(&context->copy, cudaStreamNonBlocking),
                          "cudaStreamCreate(copy)");
      !s.ok()) {
    return s;
  }
  if (auto s = CudaStatus(cudaEventCreateWithFlags(&context->compute_done, cudaEventDisableTiming),
                          "cudaEventCreate(compute_done)");
      !s.ok()) {
    return s;
  }
  if (auto s = CublasStatus(cublasCreate(&context->cublas), "cublasCreate"); !s.ok()) return s;
  if (auto s = CublasStatus(cublasSetStream(context->cublas, context->compute), "cublasSetStream");
      !s.ok()) {
    return s;
  }
  // fp32 GEMMs stay fp32 (no TF32): merges must match the CPU's arithmetic closely and fp32
  // weights are asked for to get fp32 results.
  if (auto s = CublasStatus(cublasSetMathMode(context->cublas, CUBLAS_DEFAULT_MATH),
                            "cublasSetMathMode");
      !s.ok()) {
    return s;
  }
  return context;
}

CudaContext::~CudaContext() {
  if (compute != nullptr) cudaStreamSynchronize(compute);
  if (copy != nullptr) cudaStreamSynchronize(copy);
  if (cublas != nullptr) cublasDestroy(cublas);
  if (compute_done != nullptr) cudaEventDestroy(compute_done);
  if (copy != nullptr) cudaStreamDestroy(copy);
  if (compute != nullptr) cudaStreamDestroy(compute);
}

absl::Status CudaContext::Sync(std::string_view what) const {
  return CudaStatus(cudaStreamSynchronize(compute), absl::StrCat("cudaStreamSynchronize(", what, ")"));
}

}  // namespace loraserve::cuda_backend
