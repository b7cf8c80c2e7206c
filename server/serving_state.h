// What the gRPC services share: the engine, tokenizer, adapters and metrics once the model is
// loaded. The services exist (and answer UNAVAILABLE) before that, so the health service can
// report NOT_SERVING while the model loads and again while the server drains.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/engine.h"
#include "runtime/tokenizer/tokenizer.h"
#include "server/adapter_manager.h"
#include "server/serving_metrics.h"

namespace loraserve::server {

struct ServingCore {
  Engine* engine = nullptr;
  const Tokenizer* tokenizer = nullptr;  // null when the model folder has no tokenizer.json
  AdapterManager* adapters = nullptr;
  std::string model_path;
  int max_lora = 0;
  int default_max_tokens = 16;
};

class ServingState {
 public:
  // The core once ready; UNAVAILABLE while the model loads or the server drains.
  absl::StatusOr<ServingCore*> Ready() const {
    if (draining_.load()) {
      return absl::UnavailableError("server is shutting down: retry on another replica");
    }
    ServingCore* core = core_.load();
    if (core == nullptr) return absl::UnavailableError("model is still loading: retry shortly");
    return core;
  }
  ServingCore* core() const { return core_.load(); }
  void SetCore(ServingCore* core) { core_.store(core); }
  void SetDraining() { draining_.store(true); }
  ServingMetrics& metrics() { return metrics_; }

  // Generate calls between submission and their last write; Shutdown waits for them so a
  // drained request's final messages still reach the client.
  void CallStarted() {
    std::lock_guard lock(calls_mutex_);
    ++active_calls_;
  }
  void CallFinished() {
    std::lock_guard lock(calls_mutex_);
    if (--active_calls_ == 0) calls_idle_.notify_all();
  }
  bool WaitForCalls(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(calls_mutex_);
    return calls_idle_.wait_until(lock, deadline, [this] { return active_calls_ == 0; });
  }

 private:
  std::atomic<ServingCore*> core_{nullptr};  // owned by the server, outlives the services
  std::atomic<bool> draining_{false};
  ServingMetrics metrics_;
  std::mutex calls_mutex_;  // guards active_calls_
  std::condition_variable calls_idle_;
  int active_calls_ = 0;
};

}  // namespace loraserve::server
