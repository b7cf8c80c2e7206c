#include "runtime/pool_resources.h"

#include <algorithm>

namespace loraserve {

bool PoolResources::Ensure(RequestState& r, int tokens) {
  const int needed = (tokens + block_size_ - 1) / block_size_;
  while (static_cast<int>(r.pages.size()) < needed) {
    const int missing = needed - static_cast<int>(r.pages.size());
    while (pages_->free_pages() < missing && adapters_->EvictOne()) {
    }
    auto pages = pages_->Allocate(std::min(missing, pages_->free_pages()));
    if (!pages || pages->empty()) return false;
    r.pages.insert(r.pages.end(), pages->begin(), pages->end());
  }
  return true;
}

void PoolResources::Free(RequestState& r) {
  if (r.pages.empty()) return;
  pages_->Free(r.pages);
  r.pages.clear();
}

bool PoolResources::Acquire(RequestState& r) {
  if (r.adapters_acquired) return true;
  std::vector<const ResidentLora*> resident;
  for (size_t i = 0; i < r.adapters.size(); ++i) {
    double seconds = 0;
    if (!adapters_->IsResident(r.pool_keys[i])) {
      while (adapters_->stats().resident >= max_adapters_resident_ && adapters_->EvictOne()) {
      }
    }
    auto view = adapters_->Acquire(r.pool_keys[i], r.adapters[i].first, &seconds);
    if (!view.ok()) {
      for (size_t j = 0; j < i; ++j) adapters_->Release(r.pool_keys[j]);
      return false;
    }
    if (seconds > 0) load_seconds_.push_back(seconds);
    resident.push_back(*view);
  }
  r.resident = std::move(resident);
  r.adapters_acquired = true;
  return true;
}

void PoolResources::Release(RequestState& r) {
  if (!r.adapters_acquired) return;
  for (const std::string& key : r.pool_keys) adapters_->Release(key);
  r.adapters_acquired = false;
  r.resident.clear();
}

std::vector<double> PoolResources::TakeLoadSeconds() {
  std::vector<double> out;
  out.swap(load_seconds_);
  return out;
}

}  // namespace loraserve
