#include "runtime/host_adapter_cache.h"

namespace loraserve {

std::shared_ptr<const LoraAdapter> HostAdapterCache::Get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    ++stats_.misses;
    return nullptr;
  }
  ++stats_.hits;
  lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
  return it->second.adapter;
}

std::shared_ptr<const LoraAdapter> HostAdapterCache::Peek(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : it->second.adapter;
}

bool HostAdapterCache::Contains(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.contains(key);
}

bool HostAdapterCache::Insert(const std::string& key, std::shared_ptr<const LoraAdapter> adapter,
                              bool reloadable) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    bytes_ -= it->second.bytes;
    lru_.erase(it->second.lru_pos);
    entries_.erase(it);
  }
  Entry entry;
  entry.bytes = adapter->weight_bytes;
  entry.adapter = std::move(adapter);
  entry.reloadable = reloadable;
  lru_.push_front(key);
  entry.lru_pos = lru_.begin();
  bytes_ += entry.bytes;
  entries_.emplace(key, std::move(entry));
  ++stats_.inserts;
  EvictToBudget();
  return entries_.contains(key);
}

void HostAdapterCache::Erase(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  pinned_.erase(key);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  bytes_ -= it->second.bytes;
  lru_.erase(it->second.lru_pos);
  entries_.erase(it);
}

void HostAdapterCache::SetPinned(const std::string& key, bool pinned) {
  std::lock_guard<std::mutex> lock(mu_);
  if (pinned) {
    pinned_[key] = true;
  } else {
    pinned_.erase(key);
    EvictToBudget();
  }
}

bool HostAdapterCache::Evictable(const std::string& key, const Entry& entry) const {
  return entry.reloadable && !pinned_.contains(key);
}

void HostAdapterCache::EvictToBudget() {
  if (budget_ == 0) return;
  // From the least recently used end; unevictable entries are stepped over.
  for (auto pos = lru_.end(); bytes_ > budget_ && pos != lru_.begin();) {
    --pos;
    auto it = entries_.find(*pos);
    if (!Evictable(*pos, it->second)) continue;
    bytes_ -= it->second.bytes;
    ++stats_.evictions;
    entries_.erase(it);
    pos = lru_.erase(pos);
  }
}

HostCacheStats HostAdapterCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  HostCacheStats s = stats_;
  s.bytes_used = static_cast<int64_t>(bytes_);
  s.budget_bytes = static_cast<int64_t>(budget_);
  s.entries = static_cast<int>(entries_.size());
  return s;
}

}  // namespace loraserve
