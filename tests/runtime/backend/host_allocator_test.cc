// The CPU backend's host memory: blocks start on a cache line (malloc's large blocks start 16
// bytes past one, which split every vector load), blocks of 2 MiB and more on a huge-page
// boundary with huge pages requested from the kernel, and the backend's buffers come from it.
#include "runtime/backend/host_allocator.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "runtime/backend/cpu_backend.h"

namespace loraserve {
namespace {

uintptr_t Address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// The THPeligible field of the /proc/self/smaps mapping that holds `p`: 1 when the mapping may
// use transparent huge pages (madvise honoured), 0 when not, -1 when the kernel does not say.
int ThpEligible(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t begin = 0, end = 0;
    char dash = 0;
    std::istringstream header(line);
    if (header >> std::hex >> begin >> dash >> end && dash == '-') {
      inside = begin <= Address(p) && Address(p) < end;
      continue;
    }
    if (inside && line.rfind("THPeligible:", 0) == 0) return std::stoi(line.substr(12));
  }
  return -1;
}

bool ThpAllowed() {
  std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string text((std::istreambuf_iterator<char>(mode)), std::istreambuf_iterator<char>());
  return !text.empty() && text.find("[never]") == std::string::npos;
}

TEST(HostAllocatorTest, SmallBlocksStartOnACacheLine) {
  for (size_t n : {size_t{1}, size_t{3}, size_t{100}, size_t{40000}}) {
    HostVector<float> v(n);
    EXPECT_EQ(Address(v.data()) % host_memory::kCacheLine, 0u) << n << " floats";
  }
  HostVector<uint16_t> grown;
  for (int i = 0; i < 5000; ++i) {
    grown.push_back(static_cast<uint16_t>(i));
    ASSERT_EQ(Address(grown.data()) % host_memory::kCacheLine, 0u) << "after " << i;
  }
  EXPECT_EQ(grown[4321], 4321);
}

TEST(HostAllocatorTest, LargeBlocksStartOnAHugePageAndAskForHugePages) {
  HostVector<float> pool((3 << 20) / sizeof(float));  // 3 MiB
  EXPECT_EQ(Address(pool.data()) % host_memory::kHugePage, 0u);
  EXPECT_EQ(pool[pool.size() - 1], 0.0f);  // value-initialised, like the vector it replaces
  if (ThpAllowed()) {
    EXPECT_EQ(ThpEligible(pool.data()), 1) << "madvise(MADV_HUGEPAGE) was not applied";
  } else {
    EXPECT_NE(ThpEligible(pool.data()), 1);  // THP off: the request changes nothing
  }
}

TEST(HostAllocatorTest, BackendBuffersAreAligned) {
  CpuBackend backend;
  for (int64_t cols : {1, 7, 576, 49152}) {
    auto buffer = backend.Allocate(3, cols);
    ASSERT_TRUE(buffer.ok());
    EXPECT_EQ(Address(buffer->tensor().data) % host_memory::kCacheLine, 0u) << cols;
  }
}

// ReserveWeights sizes one arena for the 16-bit matrices; uploads fill it back to back (each
// on its own cache lines, none overlapping the next), an upload it did not cover gets a block
// of its own, and every weight reads back exactly what was uploaded.
TEST(HostAllocatorTest, ReservedWeightsShareOneArenaWithoutOverlap) {
  CpuBackend backend;
  const std::vector<WeightSpec> specs = {
      {{3, 5}, DType::kBF16}, {{4}, DType::kF32}, {{2, 7}, DType::kBF16}};
  ASSERT_TRUE(backend.ReserveWeights(specs).ok());
  auto values = [](int n, float base) {
    std::vector<float> v(n);
    for (int i = 0; i < n; ++i) v[i] = base + 0.5f * i;  // exact in bf16 for these sizes
    return v;
  };
  const std::vector<float> a = values(15, 1.0f), norm = values(4, -2.0f), b = values(14, 8.0f),
                           extra = values(6, -6.0f);
  auto ha = backend.UploadWeight(a, {3, 5}, DType::kBF16);
  auto hn = backend.UploadWeight(norm, {4}, DType::kF32);
  auto hb = backend.UploadWeight(b, {2, 7}, DType::kBF16);
  auto hx = backend.UploadWeight(extra, {2, 3}, DType::kBF16);  // beyond the reservation
  ASSERT_TRUE(ha.ok() && hn.ok() && hb.ok() && hx.ok());
  EXPECT_EQ(*backend.ReadWeight(*ha), a);
  EXPECT_EQ(*backend.ReadWeight(*hn), norm);
  EXPECT_EQ(*backend.ReadWeight(*hb), b);
  EXPECT_EQ(*backend.ReadWeight(*hx), extra);
  EXPECT_EQ(backend.Info(*hb)->stored_dtype, DType::kBF16);
  EXPECT_EQ(backend.ReserveWeights(specs).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace loraserve
