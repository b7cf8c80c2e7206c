// The engine's memory behind the scheduler's interfaces: KV blocks and adapter residency carved
// from one PagePool (S-LoRA's unified paging). KV allocation evicts idle adapters before it
// reports a shortage; residency respects the resident-adapter cap. Step-loop only.
#pragma once

#include <vector>

#include "runtime/adapter_pool.h"
#include "runtime/engine_stats.h"
#include "runtime/page_pool.h"
#include "runtime/scheduler.h"

namespace loraserve {

class PoolResources final : public KvAllocator, public AdapterResidency {
 public:
  PoolResources(PagePool* pages, AdapterPool* adapters, int block_size, int max_adapters_resident)
      : pages_(pages),
        adapters_(adapters),
        block_size_(block_size),
        max_adapters_resident_(max_adapters_resident) {}

  bool Ensure(RequestState& r, int tokens) override;
  void Free(RequestState& r) override;
  bool Acquire(RequestState& r) override;
  void Release(RequestState& r) override;

  // Load times of adapters copied into the pool since the last call.
  std::vector<double> TakeLoadSeconds();

 private:
  PagePool* pages_;
  AdapterPool* adapters_;
  int block_size_;
  int max_adapters_resident_;
  std::vector<double> load_seconds_;
};

}  // namespace loraserve
