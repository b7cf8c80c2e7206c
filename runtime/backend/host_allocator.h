// Host memory for what the CPU kernels stream: weights, the KV/adapter pool, activations.
// malloc hands large blocks out 16 bytes past a page boundary, so every 64-byte vector load of
// them straddled two cache lines (a 64-sequence decode's attention ran at 15-20 GB/s, the AVX2
// loops at half that). Blocks here start on a cache line; blocks of 2 MiB and more start on a
// 2 MiB boundary and ask for transparent huge pages (madvise; a no-op where THP is off), which
// spares the TLB a miss per 4 KiB of a KV stream spread over the pool and lets the hardware
// prefetchers run past 4 KiB boundaries.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace loraserve {

namespace host_memory {

constexpr std::size_t kCacheLine = 64;
constexpr std::size_t kHugePage = std::size_t{2} << 20;

// Aligned as above; throws std::bad_alloc like operator new. Release with std::free.
void* Allocate(std::size_t bytes);

}  // namespace host_memory

template <class T>
struct HostAllocator {
  using value_type = T;
  HostAllocator() = default;
  template <class U>
  HostAllocator(const HostAllocator<U>&) {}  // NOLINT: allocators convert implicitly
  T* allocate(std::size_t n) { return static_cast<T*>(host_memory::Allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t) { std::free(p); }
  template <class U>
  bool operator==(const HostAllocator<U>&) const { return true; }
};

template <class T>
using HostVector = std::vector<T, HostAllocator<T>>;

}  // namespace loraserve
