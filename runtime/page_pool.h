// The bookkeeper of the unified page pool shared by the KV cache and resident adapters (S-LoRA's
// unified paging): whichever needs memory takes free pages, so memory flows between the two.
// It hands out page ids only; the bytes live in the backend's PoolStorage, addressed by the
// same ids and 4-byte-unit offsets on every device. Not thread-safe: owned by the step loop.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace loraserve {

class PagePool {
 public:
  PagePool(int64_t page_units, int32_t num_pages);

  int64_t page_units() const { return page_units_; }
  int32_t num_pages() const { return static_cast<int32_t>(in_use_.size()); }
  int32_t free_pages() const { return static_cast<int32_t>(free_list_.size()); }
  int32_t used_pages() const { return num_pages() - free_pages(); }
  // First 4-byte unit of a page in the pool storage.
  int64_t PageOffset(int32_t page) const { return int64_t{page} * page_units_; }

  // All-or-nothing: n page ids, or nullopt when fewer than n are free.
  std::optional<std::vector<int32_t>> Allocate(int32_t n);
  void Free(std::span<const int32_t> pages);

 private:
  int64_t page_units_;
  std::vector<int32_t> free_list_;  // LIFO keeps recently used pages warm in cache
  std::vector<bool> in_use_;
};

}  // namespace loraserve
