// runtime/page_pool.h bookkeeping: all-or-nothing Allocate, free/used counts, ids unique and in
// range, Free returning pages for reuse, exhausting and refilling. Storage accessors are not
// used here: they are moving to a backend.
#include "runtime/page_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

namespace loraserve {
namespace {

void ExpectIdsUniqueAndInRange(const std::vector<int32_t>& ids, int32_t num_pages) {
  const std::set<int32_t> distinct(ids.begin(), ids.end());
  EXPECT_EQ(distinct.size(), ids.size()) << "a page id was handed out twice";
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, num_pages);
  }
}

TEST(PagePoolTest, StartsAllFree) {
  PagePool pool(/*page_floats=*/64, /*num_pages=*/10);
  EXPECT_EQ(pool.page_units(), 64);
  EXPECT_EQ(pool.num_pages(), 10);
  EXPECT_EQ(pool.free_pages(), 10);
  EXPECT_EQ(pool.used_pages(), 0);
}

TEST(PagePoolTest, AllocateTakesExactlyNAndCountsThem) {
  PagePool pool(16, 10);
  const auto a = pool.Allocate(3);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->size(), 3u);
  EXPECT_EQ(pool.free_pages(), 7);
  EXPECT_EQ(pool.used_pages(), 3);
  const auto b = pool.Allocate(4);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->size(), 4u);
  EXPECT_EQ(pool.free_pages(), 3);
  EXPECT_EQ(pool.used_pages(), 7);
  EXPECT_EQ(pool.num_pages(), 10);
  std::vector<int32_t> all = *a;
  all.insert(all.end(), b->begin(), b->end());
  ExpectIdsUniqueAndInRange(all, 10);
}

TEST(PagePoolTest, AllocateZeroSucceedsEmpty) {
  PagePool pool(16, 4);
  const auto none = pool.Allocate(0);
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(pool.free_pages(), 4);
}

TEST(PagePoolTest, AllocateIsAllOrNothing) {
  PagePool pool(16, 5);
  ASSERT_TRUE(pool.Allocate(3).has_value());
  EXPECT_FALSE(pool.Allocate(3).has_value());  // only 2 free
  EXPECT_EQ(pool.free_pages(), 2) << "a failed Allocate must not take any page";
  EXPECT_EQ(pool.used_pages(), 3);
  const auto rest = pool.Allocate(2);
  ASSERT_TRUE(rest.has_value());
  EXPECT_EQ(rest->size(), 2u);
  EXPECT_EQ(pool.free_pages(), 0);
}

TEST(PagePoolTest, NegativeCountIsRefusedWithoutEffect) {
  PagePool pool(16, 4);
  EXPECT_FALSE(pool.Allocate(-1).has_value());
  EXPECT_EQ(pool.free_pages(), 4);
}

TEST(PagePoolTest, MoreThanThePoolIsRefused) {
  PagePool pool(16, 4);
  EXPECT_FALSE(pool.Allocate(5).has_value());
  EXPECT_EQ(pool.free_pages(), 4);
  EXPECT_TRUE(pool.Allocate(4).has_value());
}

TEST(PagePoolTest, FreeReturnsPagesForReuse) {
  PagePool pool(16, 6);
  auto a = pool.Allocate(4);
  ASSERT_TRUE(a.has_value());
  const std::vector<int32_t> returned = {(*a)[1], (*a)[3]};
  pool.Free(returned);
  EXPECT_EQ(pool.free_pages(), 4);
  EXPECT_EQ(pool.used_pages(), 2);
  // The 4 free pages are the 2 never handed out plus the 2 returned, and none still held.
  const auto b = pool.Allocate(4);
  ASSERT_TRUE(b.has_value());
  for (int32_t id : returned) {
    EXPECT_NE(std::find(b->begin(), b->end(), id), b->end()) << "freed page " << id << " lost";
  }
  std::vector<int32_t> held = {(*a)[0], (*a)[2]};
  held.insert(held.end(), b->begin(), b->end());
  ExpectIdsUniqueAndInRange(held, 6);
  EXPECT_EQ(pool.free_pages(), 0);
}

TEST(PagePoolTest, FreeEmptySpanIsNoOp) {
  PagePool pool(16, 3);
  ASSERT_TRUE(pool.Allocate(2).has_value());
  pool.Free({});
  EXPECT_EQ(pool.free_pages(), 1);
}

TEST(PagePoolTest, ExhaustOneAtATimeThenRefill) {
  constexpr int32_t kPages = 32;
  PagePool pool(8, kPages);
  std::vector<int32_t> held;
  for (int32_t i = 0; i < kPages; ++i) {
    const auto page = pool.Allocate(1);
    ASSERT_TRUE(page.has_value()) << "allocation " << i << " of " << kPages;
    held.push_back(page->front());
    EXPECT_EQ(pool.used_pages(), i + 1);
  }
  // Every id in [0, kPages) exactly once.
  std::vector<int32_t> sorted = held;
  std::sort(sorted.begin(), sorted.end());
  for (int32_t i = 0; i < kPages; ++i) EXPECT_EQ(sorted[i], i);
  EXPECT_FALSE(pool.Allocate(1).has_value());
  EXPECT_EQ(pool.free_pages(), 0);

  pool.Free(held);
  EXPECT_EQ(pool.free_pages(), kPages);
  EXPECT_EQ(pool.used_pages(), 0);
  const auto everything = pool.Allocate(kPages);
  ASSERT_TRUE(everything.has_value());
  ExpectIdsUniqueAndInRange(*everything, kPages);
  EXPECT_EQ(everything->size(), static_cast<size_t>(kPages));
}

TEST(PagePoolTest, ChurnKeepsCountsConsistent) {
  // Interleaved allocations and frees of varying sizes, checked against a model of held ids.
  constexpr int32_t kPages = 20;
  PagePool pool(4, kPages);
  std::vector<std::vector<int32_t>> blocks;
  int32_t held = 0;
  for (int step = 0; step < 200; ++step) {
    const int32_t want = 1 + (step * 7) % 5;
    if (step % 3 == 2 && !blocks.empty()) {
      const size_t victim = (step * 13) % blocks.size();
      held -= static_cast<int32_t>(blocks[victim].size());
      pool.Free(blocks[victim]);
      blocks.erase(blocks.begin() + static_cast<std::ptrdiff_t>(victim));
    } else if (auto got = pool.Allocate(want)) {
      ASSERT_LE(held + want, kPages);
      held += want;
      blocks.push_back(*std::move(got));
    } else {
      ASSERT_GT(held + want, kPages) << "refused " << want << " with " << kPages - held << " free";
    }
    ASSERT_EQ(pool.used_pages(), held);
    ASSERT_EQ(pool.free_pages(), kPages - held);
    std::vector<int32_t> all;
    for (const auto& b : blocks) all.insert(all.end(), b.begin(), b.end());
    ExpectIdsUniqueAndInRange(all, kPages);
  }
}

}  // namespace
}  // namespace loraserve
