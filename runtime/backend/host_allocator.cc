#include "runtime/backend/host_allocator.h"

#include <sys/mman.h>

#include <algorithm>

namespace loraserve::host_memory {

void* Allocate(std::size_t bytes) {
  const std::size_t alignment = bytes >= kHugePage ? kHugePage : kCacheLine;
  // aligned_alloc wants a multiple of the alignment; the rounding wastes under one huge page on
  // blocks that are already megabytes.
  const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + alignment - 1) / alignment *
                              alignment;
  void* p = std::aligned_alloc(alignment, rounded);
  if (p == nullptr) throw std::bad_alloc();
  // Before the first touch, so the pages are faulted in huge; failure only loses the speed.
  if (alignment == kHugePage) madvise(p, rounded, MADV_HUGEPAGE);
  return p;
}

}  // namespace loraserve::host_memory
