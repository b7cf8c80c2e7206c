// The CUDA state one backend and its pools share: the device, a compute stream every op runs on
// in order, a copy stream for pool uploads, the cuBLAS handle, and the pinned staging ring that
// carries each op's small host tables to the device. Only runtime/backend/cuda/ includes it.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loraserve::cuda_backend {

// The call's name and CUDA's own words; out-of-memory is RESOURCE_EXHAUSTED so callers can tell
// it from a broken device.
absl::Status CudaStatus(cudaError_t error, std::string_view call);
absl::Status CublasStatus(cublasStatus_t status, std::string_view call);

// Device memory freed with cudaFree when the last owner goes.
struct DeviceFree {
  void operator()(void* p) const;
};
using DevicePtr = std::unique_ptr<void, DeviceFree>;
absl::StatusOr<DevicePtr> DeviceAlloc(size_t bytes, std::string_view what);

struct PinnedFree {
  void operator()(void* p) const;
};
using PinnedPtr = std::unique_ptr<void, PinnedFree>;

// A pinned host buffer and a device buffer of the same size, handed out front to back: an op
// writes its tables at Take()'s host address and one cudaMemcpyAsync on the compute stream moves
// them to the same offset on the device. Reaching the end waits for the compute stream (every
// copy out of the ring and every kernel reading its device half is done) and starts over, so a
// step's staging costs one synchronisation per ring's worth of bytes, not one per op.
class StagingRing {
 public:
  static absl::StatusOr<std::unique_ptr<StagingRing>> Create(size_t bytes);

  struct Slot {
    void* host;
    void* device;
    size_t offset;  // from the ring's start, in bytes (a multiple of kAlign)
  };
  static constexpr size_t kAlign = 256;
  // Room for `bytes`; syncs `stream` first when the ring wraps. Larger than the ring: an error.
  absl::StatusOr<Slot> Take(size_t bytes, cudaStream_t stream);
  // Copies the slot's first `bytes` host bytes to its device half on `stream`.
  absl::Status Upload(const Slot& slot, size_t bytes, cudaStream_t stream);
  float* device_floats() const { return static_cast<float*>(device_.get()); }
  size_t size() const { return bytes_; }

 private:
  StagingRing(PinnedPtr host, DevicePtr device, size_t bytes)
      : host_(std::move(host)), device_(std::move(device)), bytes_(bytes) {}
  PinnedPtr host_;
  DevicePtr device_;
  size_t bytes_;
  size_t next_ = 0;
};

struct CudaContext {
  int device = 0;
  cudaStream_t compute = nullptr;
  cudaStream_t copy = nullptr;
  cublasHandle_t cublas = nullptr;
  // Recorded on the compute stream after each op that reads the pool: a pool write waits on it,
  // so pages are overwritten only after the last step that read them has finished.
  cudaEvent_t compute_done = nullptr;

  static absl::StatusOr<std::shared_ptr<CudaContext>> Create(int device);
  ~CudaContext();
  absl::Status Sync(std::string_view what) const;
};

}  // namespace loraserve::cuda_backend
