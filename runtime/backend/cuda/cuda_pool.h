// The unified KV + adapter pool on the device: one cudaMalloc (never managed memory) holding the
// host PagePool's pages at the same page ids and 4-byte unit offsets, so the host stays the one
// bookkeeper, followed by a small tail where a step's DoRA factors are staged (the expand kernel
// reads them pool-relative, like every other row).
//
// Writes (adapter uploads) go through pinned staging on the copy stream. Each write first waits
// for the compute stream's last pool-reading op (CudaContext::compute_done), so a freed page is
// overwritten only after the last step that read it has finished, and records an event the next
// op that reads the pool waits on (BeforeRead), so a step never sees half an adapter.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <mutex>

#include "runtime/backend/backend.h"
#include "runtime/backend/cuda/cuda_context.h"

namespace loraserve::cuda_backend {

class CudaPool final : public PoolStorage {
 public:
  static absl::StatusOr<std::unique_ptr<CudaPool>> Create(std::shared_ptr<CudaContext> context,
                                                          int64_t page_units, int32_t num_pages,
                                                          int64_t tail_units);
  ~CudaPool() override;

  absl::Status Write(int64_t offset, std::span<const uint32_t> units) override;
  absl::StatusOr<std::vector<uint32_t>> Read(int64_t offset, int64_t count) const override;

  // Makes the compute stream wait for every write issued so far; call before an op reads or
  // writes the pool. After it, the op's work must be followed by AfterUse().
  absl::Status BeforeUse() const;
  absl::Status AfterUse() const;

  float* data() const { return static_cast<float*>(storage_.get()); }
  // The DoRA tail: units [total_units(), total_units() + tail_units()) of data().
  int64_t tail_units() const { return tail_units_; }

 private:
  CudaPool(std::shared_ptr<CudaContext> context, int64_t page_units, int32_t num_pages,
           int64_t tail_units)
      : PoolStorage(page_units, num_pages), context_(std::move(context)), tail_units_(tail_units) {}

  static constexpr size_t kStagingBytes = size_t{8} << 20;  // two halves, double-buffered

  std::shared_ptr<CudaContext> context_;
  int64_t tail_units_;
  DevicePtr storage_;
  PinnedPtr staging_;
  cudaEvent_t half_free_[2] = {nullptr, nullptr};  // the copy out of each half has finished
  cudaEvent_t written_ = nullptr;                    // after the last write on the copy stream
  // Writes come from the engine's loader threads as well as the step loop.
  mutable std::mutex mu_;
  int next_half_ = 0;
  mutable bool pending_write_ = false;
};

}  // namespace loraserve::cuda_backend
