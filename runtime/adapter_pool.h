// Resident adapters in the unified page pool. An adapter's A rows and B columns are packed
// into whole pages it owns (a row never straddles a page), and the forward pass reaches them
// through per-rank offsets, so eviction frees pages without compaction. Reference counts keep
// in-use adapters resident; LRU eviction picks among unreferenced, unpinned ones.
// Not thread-safe: owned by the engine's step loop.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/lora_adapter.h"
#include "runtime/backend/backend.h"
#include "runtime/page_pool.h"
#include "runtime/resident_adapter.h"

namespace loraserve {

// How adapter rows are stored in the pool (vLLM's lora_dtype). Compute is fp32 either way.
//   kAuto: as the file stored them: bf16/fp16 files stay 16-bit (lossless, half the pages and
//          half the bytes a decode step streams), everything else fp32.
//   kF32:  always fp32.
//   kBF16: always bf16; fp32 adapters are rounded (to nearest even), i.e. lossy.
enum class AdapterStorage { kAuto, kF32, kBF16 };
// "auto", "fp32", "bf16".
absl::StatusOr<AdapterStorage> ParseAdapterStorage(std::string_view name);
const char* AdapterStorageName(AdapterStorage storage);

// Pristine base weights an adapter is measured against (DoRA needs ||W + s B A|| per row).
using BaseWeightFn = std::function<std::vector<float>(int layer, Module module)>;

// DoRA's per-output-row factor magnitude / ||W + scaling * B A||_row for one module.
std::vector<float> DoraScale(const LoraModuleWeights& module, const std::vector<float>& base,
                             ModuleDims dims);

struct AdapterPoolStats {
  int resident = 0;
  int64_t pages_used = 0;
  int64_t loads = 0;
  int64_t evictions = 0;
  int64_t hits = 0;
  int64_t misses = 0;
};

class AdapterPool {
 public:
  // Pages come from `pages`; rows are written into `memory` (the backend's pool storage).
  AdapterPool(PagePool* pages, PoolStorage* memory, const ModelConfig& config,
              BaseWeightFn base_weight, AdapterStorage storage = AdapterStorage::kAuto);

  // Makes `adapter` resident (evicting LRU unreferenced adapters when pages run out) and takes
  // a reference. RESOURCE_EXHAUSTED when it cannot fit even after eviction. `load_seconds`
  // receives the copy time on a miss.
  // `key` names this copy in the pool: the engine uses one key per registration so a
  // re-uploaded adapter never aliases the old copy that in-flight requests still read.
  absl::StatusOr<const ResidentLora*> Acquire(const std::string& key,
                                              const std::shared_ptr<const LoraAdapter>& adapter,
                                              double* load_seconds = nullptr);
  void Release(const std::string& id);
  // Pages an adapter would take; lets the scheduler check before it commits.
  int64_t PagesNeeded(const LoraAdapter& adapter) const {
    return PagesNeeded(adapter, config_, pages_->page_units(), storage_);
  }
  // The same for any pool of `page_units`-unit pages (sizing a pool before it exists).
  static int64_t PagesNeeded(const LoraAdapter& adapter, const ModelConfig& config,
                             int64_t page_units, AdapterStorage storage);

  bool IsResident(const std::string& id) const { return entries_.count(id) != 0; }
  int RefCount(const std::string& id) const;
  void SetPinned(const std::string& id, bool pinned);
  bool IsPinned(const std::string& id) const;
  // Evicts the least recently used unreferenced, unpinned adapter; false when none.
  bool EvictOne();
  // Drops an unreferenced adapter now (e.g. after Unregister). No-op when referenced.
  void EvictIfUnused(const std::string& id);

  AdapterPoolStats stats() const;
  std::vector<std::string> ResidentKeys() const;

 private:
  struct Entry {
    std::shared_ptr<const LoraAdapter> adapter;
    std::unique_ptr<ResidentLora> resident;
    std::vector<int32_t> pages;
    int refs = 0;
    bool pinned = false;
    std::list<std::string>::iterator lru_pos;
  };
  void Evict(std::map<std::string, Entry>::iterator it);

  PagePool* pages_;
  PoolStorage* memory_;
  ModelConfig config_;
  AdapterStorage storage_;
  BaseWeightFn base_weight_;
  std::map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // front = most recently used
  std::map<std::string, bool> pinned_requests_;  // pins set before the adapter is resident
  AdapterPoolStats stats_;
};

}  // namespace loraserve
