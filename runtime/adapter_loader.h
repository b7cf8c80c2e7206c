// The engine's loader: one thread that moves adapters from the disk store into host memory
// (read, verify, parse), so the step loop never blocks on a disk read. Loads run in the order
// they were asked for; a key already queued or running is not queued twice. The completion
// callback runs on the loader thread (the engine posts it to its step loop).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "adapters/lora_adapter.h"

namespace loraserve {

// Reads one registered adapter from wherever it is stored; runs on the loader thread.
using AdapterLoadFn = std::function<absl::StatusOr<std::shared_ptr<const LoraAdapter>>()>;

class AdapterLoader {
 public:
  using Done = std::function<void(const std::string& key,
                                  absl::StatusOr<std::shared_ptr<const LoraAdapter>> adapter,
                                  double seconds)>;
  explicit AdapterLoader(Done done);
  // Stops after the load in progress; queued loads are dropped without a callback.
  ~AdapterLoader();
  AdapterLoader(const AdapterLoader&) = delete;
  AdapterLoader& operator=(const AdapterLoader&) = delete;

  // Queues a load of `key`; false when one is already queued or running.
  bool Request(const std::string& key, AdapterLoadFn load);
  // Queued or running.
  bool Pending(const std::string& key) const;
  int pending() const;

 private:
  void Run();

  const Done done_;
  mutable std::mutex mu_;  // guards queue_, pending_, stopping_
  std::condition_variable cv_;
  std::deque<std::pair<std::string, AdapterLoadFn>> queue_;
  std::set<std::string> pending_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace loraserve
