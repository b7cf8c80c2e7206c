// Page ids come off a LIFO free list; the pool's bytes are the backend's (PoolStorage).
#include "runtime/page_pool.h"

#include <cassert>

namespace loraserve {

PagePool::PagePool(int64_t page_units, int32_t num_pages)
    : page_units_(page_units), in_use_(num_pages, false) {
  free_list_.reserve(num_pages);
  for (int32_t i = num_pages - 1; i >= 0; --i) free_list_.push_back(i);
}

std::optional<std::vector<int32_t>> PagePool::Allocate(int32_t n) {
  if (n < 0 || n > free_pages()) return std::nullopt;
  std::vector<int32_t> pages(free_list_.end() - n, free_list_.end());
  free_list_.resize(free_list_.size() - n);
  for (int32_t p : pages) in_use_[p] = true;
  return pages;
}

void PagePool::Free(std::span<const int32_t> pages) {
  for (int32_t p : pages) {
    assert(in_use_[p] && "double free of a pool page");
    in_use_[p] = false;
    free_list_.push_back(p);
  }
}

}  // namespace loraserve
