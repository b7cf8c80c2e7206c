// WorkerPool: a mutex-guarded FIFO drained by a fixed number of threads. Stop drains the queue
// before joining because every queued admin task owes an RPC its answer.
#include "server/worker_pool.h"

#include <algorithm>

namespace loraserve::server {

WorkerPool::WorkerPool(int threads) : threads_(std::max(1, threads)) {}

WorkerPool::~WorkerPool() { Stop(); }

void WorkerPool::Start() {
  {
    std::lock_guard lock(mutex_);
    if (running_ || stopping_) return;
    running_ = true;
  }
  for (int i = 0; i < threads_; ++i) workers_.emplace_back([this] { Run(); });
}

absl::Status WorkerPool::Submit(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      return absl::UnavailableError("server is shutting down: retry on another replica");
    }
    if (!running_) return absl::UnavailableError("server is still starting: retry shortly");
    queue_.push_back(std::move(task));
  }
  wake_.notify_one();
  return absl::OkStatus();
}

void WorkerPool::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
}

void WorkerPool::Run() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left to run
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace loraserve::server
