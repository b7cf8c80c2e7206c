// A fixed set of threads for admin work that can take seconds (upload validation, sha256 and
// fsync, adapter loads, fusion's SVD), so gRPC's callback threads never block on it. The server
// owns one: Start before serving, Stop at shutdown.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace loraserve::server {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();  // Stop()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Starts the threads; once (later calls do nothing).
  void Start();
  // Queues `task` to run on a worker. UNAVAILABLE before Start and once Stop has begun: the task
  // is then dropped unrun, and the caller must finish its work itself (e.g. answer the RPC).
  absl::Status Submit(std::function<void()> task);
  // Refuses new tasks, runs every task already queued, then joins the threads. Idempotent.
  void Stop();

 private:
  void Run();

  const int threads_;
  // Guards queue_, running_ and stopping_.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool running_ = false;
  bool stopping_ = false;
  std::vector<std::thread> workers_;  // touched only by Start and Stop (the owner's thread)
};

}  // namespace loraserve::server
