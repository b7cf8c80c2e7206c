// The host tier of adapter memory: parsed adapters under a byte budget, between the disk store
// and the pool pages. Least recently used, unpinned, reloadable entries are evicted first when
// an insert goes over the budget. An entry that cannot be reloaded (registered from memory,
// with no store copy) is never evicted; it counts against the budget all the same. Eviction
// drops only the cache's reference: a request holding an adapter keeps it until it finishes.
// Thread-safe: Submit, the step loop and admin calls all read it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "adapters/lora_adapter.h"

namespace loraserve {

struct HostCacheStats {
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t inserts = 0;
  int64_t evictions = 0;
  int64_t bytes_used = 0;
  int64_t budget_bytes = 0;  // 0 = unlimited
  int entries = 0;
};

class HostAdapterCache {
 public:
  // `budget_bytes` 0 = unlimited.
  explicit HostAdapterCache(size_t budget_bytes) : budget_(budget_bytes) {}

  // The adapter under `key`, marked most recently used; counts a hit or a miss.
  std::shared_ptr<const LoraAdapter> Get(const std::string& key);
  // The same without touching recency or counts (listing, re-checks).
  std::shared_ptr<const LoraAdapter> Peek(const std::string& key) const;
  bool Contains(const std::string& key) const;
  // Adds or replaces `key`, then evicts down to the budget. `reloadable`: the adapter can be read
  // again from the store, so the cache may drop it. Returns false when the budget could not keep
  // it (it was evicted again at once: it alone is larger than what unpinned space allows).
  bool Insert(const std::string& key, std::shared_ptr<const LoraAdapter> adapter, bool reloadable);
  void Erase(const std::string& key);
  // A pinned key is never evicted; a pin set before the adapter is cached holds once it is.
  void SetPinned(const std::string& key, bool pinned);
  HostCacheStats stats() const;

 private:
  struct Entry {
    std::shared_ptr<const LoraAdapter> adapter;
    size_t bytes = 0;
    bool reloadable = true;
    std::list<std::string>::iterator lru_pos;
  };
  bool Evictable(const std::string& key, const Entry& entry) const;
  void EvictToBudget();

  const size_t budget_;
  mutable std::mutex mu_;  // guards everything below
  std::map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // front = most recently used
  std::map<std::string, bool> pinned_;
  size_t bytes_ = 0;
  HostCacheStats stats_;
};

}  // namespace loraserve
