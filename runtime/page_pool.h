// One pool of fixed-size float pages shared by the KV cache and resident adapters (S-LoRA's
// unified paging): whichever needs memory takes free pages, so memory flows between the two.
// Not thread-safe: it is owned by the engine's step loop.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace loraserve {

class PagePool {
 public:
  PagePool(int64_t page_floats, int32_t num_pages);

  int64_t page_floats() const { return page_floats_; }
  int32_t num_pages() const { return static_cast<int32_t>(in_use_.size()); }
  int32_t free_pages() const { return static_cast<int32_t>(free_list_.size()); }
  int32_t used_pages() const { return num_pages() - free_pages(); }
  float* data() { return storage_.get(); }
  const float* data() const { return storage_.get(); }
  float* page(int32_t id) { return storage_.get() + id * page_floats_; }

  // All-or-nothing: n page ids, or nullopt when fewer than n are free.
  std::optional<std::vector<int32_t>> Allocate(int32_t n);
  void Free(std::span<const int32_t> pages);

 private:
  int64_t page_floats_;
  // Left uninitialised: the OS commits pages on first touch, so a large pool costs nothing
  // until KV blocks or adapters are written into it.
  std::unique_ptr<float[]> storage_;
  std::vector<int32_t> free_list_;  // LIFO keeps recently used pages warm in cache
  std::vector<bool> in_use_;
};

}  // namespace loraserve
