#include "runtime/backend/cuda/cuda_pool.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace loraserve::cuda_backend {

absl::StatusOr<std::unique_ptr<CudaPool>> CudaPool::Create(std::shared_ptr<CudaContext> context,
                                                           int64_t page_units, int32_t num_pages,
                                                           int64_t tail_units) {
  std::unique_ptr<CudaPool> pool(
      new CudaPool(std::move(context), page_units, num_pages, tail_units));
  const size_t bytes = static_cast<size_t>(pool->total_units() + tail_units) * sizeof(uint32_t);
  auto storage = DeviceAlloc(bytes, "the KV + adapter pool");
  if (!storage.ok()) return storage.status();
  pool->storage_ = std::move(*storage);
  // Zeroed like the CPU pool: a KV block read before it is written holds zeros, not garbage.
  if (auto s = CudaStatus(cudaMemset(pool->storage_.get(), 0, bytes), "cudaMemset(pool)"); !s.ok()) {
    return s;
  }
  void* staging = nullptr;
  if (auto s = CudaStatus(cudaMallocHost(&staging, kStagingBytes), "cudaMallocHost(pool staging)");
      !s.ok()) {
    return s;
  }
  pool->staging_.reset(staging);
  for (cudaEvent_t* e : {&pool->half_free_[0], &pool->half_free_[1], &pool->written_}) {
    if (auto s = CudaStatus(cudaEventCreateWithFlags(e, cudaEventDisableTiming),
                            "cudaEventCreate(pool)");
        !s.ok()) {
      return s;
    }
  }
  return pool;
}

CudaPool::~CudaPool() {
  if (context_ != nullptr && context_->copy != nullptr) cudaStreamSynchronize(context_->copy);
  for (cudaEvent_t e : {half_free_[0], half_free_[1], written_}) {
    if (e != nullptr) cudaEventDestroy(e);
  }
}

absl::Status CudaPool::Write(int64_t offset, std::span<const uint32_t> units) {
  if (auto s = CheckRange(offset, static_cast<int64_t>(units.size())); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  // The fence: these pages may have been freed by a step the compute stream still runs.
  if (auto s = CudaStatus(cudaStreamWaitEvent(context_->copy, context_->compute_done, 0),
                          "cudaStreamWaitEvent(pool write after compute)");
      !s.ok()) {
    return s;
  }
  const size_t half_bytes = kStagingBytes / 2;
  size_t done = 0;
  while (done < units.size()) {
    const size_t n = std::min(units.size() - done, half_bytes / sizeof(uint32_t));
    const int half = next_half_;
    next_half_ ^= 1;
    if (auto s = CudaStatus(cudaEventSynchronize(half_free_[half]), "cudaEventSynchronize(staging)");
        !s.ok()) {
      return s;
    }
    char* host = static_cast<char*>(staging_.get()) + half * half_bytes;
    std::memcpy(host, units.data() + done, n * sizeof(uint32_t));
    if (auto s = CudaStatus(cudaMemcpyAsync(data() + offset + static_cast<int64_t>(done), host,
                                            n * sizeof(uint32_t), cudaMemcpyHostToDevice,
                                            context_->copy),
                            "cudaMemcpyAsync(pool write)");
        !s.ok()) {
      return s;
    }
    if (auto s = CudaStatus(cudaEventRecord(half_free_[half], context_->copy),
                            "cudaEventRecord(staging)");
        !s.ok()) {
      return s;
    }
    done += n;
  }
  if (auto s = CudaStatus(cudaEventRecord(written_, context_->copy), "cudaEventRecord(pool write)");
      !s.ok()) {
    return s;
  }
  pending_write_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> CudaPool::Read(int64_t offset, int64_t count) const {
  if (auto s = CheckRange(offset, count); !s.ok()) return s;
  if (auto s = BeforeUse(); !s.ok()) return s;
  std::vector<uint32_t> out(static_cast<size_t>(count));
  if (auto s = CudaStatus(cudaMemcpyAsync(out.data(), data() + offset, out.size() * sizeof(uint32_t),
                                          cudaMemcpyDeviceToHost, context_->compute),
                          "cudaMemcpyAsync(pool read)");
      !s.ok()) {
    return s;
  }
  if (auto s = context_->Sync("pool read"); !s.ok()) return s;
  return out;
}

absl::Status CudaPool::BeforeUse() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!pending_write_) return absl::OkStatus();
  pending_write_ = false;
  return CudaStatus(cudaStreamWaitEvent(context_->compute, written_, 0),
                    "cudaStreamWaitEvent(compute after pool write)");
}

absl::Status CudaPool::AfterUse() const {
  return CudaStatus(cudaEventRecord(context_->compute_done, context_->compute),
                    "cudaEventRecord(compute_done)");
}

}  // namespace loraserve::cuda_backend
