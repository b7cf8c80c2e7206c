#include "runtime/adapter_loader.h"

#include <chrono>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace loraserve {

AdapterLoader::AdapterLoader(Done done) : done_(std::move(done)), thread_([this] { Run(); }) {}

AdapterLoader::~AdapterLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool AdapterLoader::Request(const std::string& key, AdapterLoadFn load) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || !pending_.insert(key).second) return false;
    queue_.emplace_back(key, std::move(load));
  }
  cv_.notify_one();
  return true;
}

bool AdapterLoader::Pending(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.contains(key);
}

int AdapterLoader::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(pending_.size());
}

void AdapterLoader::Run() {
  while (true) {
    std::pair<std::string, AdapterLoadFn> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    const auto started = std::chrono::steady_clock::now();
    absl::StatusOr<std::shared_ptr<const LoraAdapter>> adapter = job.second();
    if (adapter.ok() && *adapter == nullptr) {
      adapter = absl::InternalError("adapter loader returned no adapter");
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    {
      // Done before the key leaves pending_: a Request racing with this completion either
      // sees it pending (and the engine's callback serves it) or queues a fresh load.
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    done_(job.first, std::move(adapter), seconds);
#if defined(__GLIBC__)
    // Parsing churns through megabytes of buffers per adapter; glibc keeps freed heap pages
    // mapped unless asked, so a loader cycling through thousands of adapters would hold RSS
    // well above the host tier's budget.
    malloc_trim(0);
#endif
    std::lock_guard<std::mutex> lock(mu_);
    pending_.erase(job.first);
  }
}

}  // namespace loraserve
