// The admin worker pool: tasks run on its threads, in parallel; Stop finishes what was queued
// and joins; a task offered before Start or after Stop is rejected and never runs.
#include "server/worker_pool.h"

#include <atomic>
#include <future>
#include <latch>
#include <thread>

#include "gtest/gtest.h"

namespace loraserve::server {
namespace {

TEST(WorkerPoolTest, RunsTasksOnItsOwnThreadsInParallel) {
  WorkerPool pool(2);
  pool.Start();
  // Each task waits for the other: both finish only if two workers run them at once.
  std::latch both_running(2);
  std::promise<std::thread::id> first, second;
  ASSERT_TRUE(pool.Submit([&] {
                    both_running.arrive_and_wait();
                    first.set_value(std::this_thread::get_id());
                  })
                  .ok());
  ASSERT_TRUE(pool.Submit([&] {
                    both_running.arrive_and_wait();
                    second.set_value(std::this_thread::get_id());
                  })
                  .ok());
  const std::thread::id a = first.get_future().get(), b = second.get_future().get();
  EXPECT_NE(a, b);
  EXPECT_NE(a, std::this_thread::get_id());
  EXPECT_NE(b, std::this_thread::get_id());
  pool.Stop();
}

TEST(WorkerPoolTest, StopRunsEveryQueuedTaskThenJoins) {
  WorkerPool pool(1);
  pool.Start();
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  std::atomic<int> ran{0};
  ASSERT_TRUE(pool.Submit([open] { open.wait(); }).ok());  // holds the only worker
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(pool.Submit([&ran] { ++ran; }).ok());
  std::thread stopper([&] { pool.Stop(); });
  gate.set_value();
  stopper.join();
  EXPECT_EQ(ran.load(), 5) << "Stop returned before the queued tasks ran";
}

TEST(WorkerPoolTest, TasksOutsideStartAndStopAreRejectedUnrun) {
  WorkerPool pool(1);
  std::atomic<int> ran{0};
  absl::Status before = pool.Submit([&ran] { ++ran; });
  EXPECT_EQ(before.code(), absl::StatusCode::kUnavailable);
  pool.Start();
  pool.Stop();
  absl::Status after = pool.Submit([&ran] { ++ran; });
  EXPECT_EQ(after.code(), absl::StatusCode::kUnavailable);
  pool.Start();  // no restart after Stop
  EXPECT_EQ(pool.Submit([&ran] { ++ran; }).code(), absl::StatusCode::kUnavailable);
  pool.Stop();  // idempotent
  EXPECT_EQ(ran.load(), 0);
}

}  // namespace
}  // namespace loraserve::server
