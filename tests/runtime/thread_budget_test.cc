// The step loop's team size: the free-core arithmetic, its hysteresis, that the budget really
// sets the calling thread's OpenMP team, and that /proc/stat reads sensibly on this machine.
#include "runtime/thread_budget.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <deque>

namespace loraserve {
namespace {

TEST(ThreadBudgetTest, OtherProcessesCoresIsBusyTimeLessOurOwn) {
  const CpuSample before{.busy_s = 10, .total_s = 40, .own_s = 3, .cpus = 2};
  // 1 s of wall time on 2 CPUs: 1.5 CPU-s busy, 0.5 of it ours -> others held 1 core.
  const CpuSample after{.busy_s = 11.5, .total_s = 42, .own_s = 3.5, .cpus = 2};
  EXPECT_DOUBLE_EQ(OtherProcessesCores(before, after), 1.0);
  EXPECT_DOUBLE_EQ(OtherProcessesCores(after, after), 0.0);  // empty interval
  // Our own time can exceed the busy ticks by rounding: never negative.
  const CpuSample ours_only{.busy_s = 11.9, .total_s = 42, .own_s = 5.0, .cpus = 2};
  EXPECT_DOUBLE_EQ(OtherProcessesCores(before, ours_only), 0.0);
}

TEST(ThreadBudgetTest, ThreadsFollowFreeCoresWithHysteresis) {
  EXPECT_EQ(ThreadsForFreeCores(2.0, 2, 2), 2);
  EXPECT_EQ(ThreadsForFreeCores(1.0, 2, 2), 1);   // a neighbour holds a core
  EXPECT_EQ(ThreadsForFreeCores(1.5, 2, 2), 2);   // half a core taken: keep both
  EXPECT_EQ(ThreadsForFreeCores(1.35, 2, 2), 1);  // most of one taken: down
  EXPECT_EQ(ThreadsForFreeCores(1.5, 1, 2), 1);   // up only once 0.6 of it is free
  EXPECT_EQ(ThreadsForFreeCores(1.65, 1, 2), 2);
  EXPECT_EQ(ThreadsForFreeCores(0.1, 2, 2), 1);   // never below one
  EXPECT_EQ(ThreadsForFreeCores(8.0, 2, 4), 4);   // never above the quiet team
}

TEST(ThreadBudgetTest, UpdateSetsTheCallingThreadsTeamOncePerInterval) {
  const int saved = omp_get_max_threads();
  std::deque<CpuSample> samples = {
      {.busy_s = 0, .total_s = 0, .own_s = 0, .cpus = 2},
      {.busy_s = 1.0, .total_s = 2.0, .own_s = 0.0, .cpus = 2},   // a neighbour took 1 core
      {.busy_s = 1.1, .total_s = 4.0, .own_s = 0.1, .cpus = 2}};  // it left
  int reads = 0;
  ThreadBudget budget(2, [&]() -> absl::StatusOr<CpuSample> {
    ++reads;
    CpuSample s = samples.front();
    if (samples.size() > 1) samples.pop_front();
    return s;
  }, std::chrono::milliseconds(500));
  const auto t0 = ThreadBudget::Clock::now();
  EXPECT_EQ(budget.Update(t0), 2);
  EXPECT_EQ(budget.Update(t0 + std::chrono::milliseconds(100)), 2);  // within the interval
  EXPECT_EQ(reads, 1);
  EXPECT_EQ(budget.Update(t0 + std::chrono::milliseconds(600)), 1);
  EXPECT_EQ(omp_get_max_threads(), 1);  // the team of this thread's next parallel region
  EXPECT_EQ(budget.Update(t0 + std::chrono::milliseconds(1200)), 2);
  EXPECT_EQ(omp_get_max_threads(), 2);
  EXPECT_EQ(reads, 3);
  omp_set_num_threads(saved);
}

TEST(ThreadBudgetTest, AFailingSamplerKeepsTheTeam) {
  ThreadBudget budget(3, [] { return absl::StatusOr<CpuSample>(absl::UnavailableError("no")); });
  EXPECT_EQ(budget.Update(ThreadBudget::Clock::now()), 3);
}

TEST(ThreadBudgetTest, ReadsThisMachinesCpus) {
  auto a = ReadCpuSample();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_GE(a->cpus, 1);
  EXPECT_GT(a->total_s, 0);
  EXPECT_LE(a->busy_s, a->total_s);
  volatile double sink = 0;
  for (int i = 0; i < 20000000; ++i) sink = sink + i * 1e-9;  // burn some CPU time of our own
  auto b = ReadCpuSample();
  ASSERT_TRUE(b.ok());
  EXPECT_GT(b->own_s, a->own_s);
  EXPECT_GE(b->total_s, a->total_s);
}

}  // namespace
}  // namespace loraserve
