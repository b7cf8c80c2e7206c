// The adapters a server can serve, by id: each registration gets its own pool key (so a
// re-uploaded adapter never aliases the copy in-flight requests still read) and its own pin
// flag (so a re-upload under a pinned id starts unpinned). Thread-safe: owns its lock.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "adapters/lora_adapter.h"
#include "runtime/adapter_loader.h"

namespace loraserve {

// What listing and admission need of an adapter, without its weights: a stored adapter is
// registered from this alone (its index entry), and loaded when a request first needs it.
struct AdapterSummary {
  std::string id;
  int max_rank = 0;
  double alpha = 0;
  std::vector<std::string> target_modules;  // in Module order
  size_t bytes = 0;                         // fp32 bytes of its weights once parsed
  bool use_dora = false;
  int num_layers = 0;
};
AdapterSummary SummarizeAdapter(const LoraAdapter& adapter);

struct RegisteredAdapter {
  AdapterSummary summary;
  // Reads the adapter again from the store; empty for an adapter registered from memory only
  // (the host tier then keeps it for the registration's lifetime).
  AdapterLoadFn load;
  std::string pool_key;  // unique per registration
  bool pinned = false;
  std::chrono::system_clock::time_point last_used;
};

// What ListAdapters reports of one registration.
struct AdapterInfo {
  std::string id;
  // kStored: on disk only; kLoading: being read into host memory; kHost: parsed in host memory;
  // kResident: in the pool's pages.
  enum class State { kStored, kLoading, kHost, kResident } state = State::kHost;
  bool pinned = false;
  int max_rank = 0;
  double alpha = 0;
  std::vector<std::string> target_modules;
  size_t bytes = 0;
  int in_flight = 0;
  std::chrono::system_clock::time_point last_used;
};
// The static part of an adapter's listing (id, pin, rank, alpha, target modules, size, last use);
// residency and in-flight counts are the engine's to fill in.
AdapterInfo DescribeAdapter(const RegisteredAdapter& entry);

class AdapterRegistry {
 public:
  // ALREADY_EXISTS when the id is registered. Returns the registration's pool key.
  absl::StatusOr<std::string> Register(AdapterSummary summary, AdapterLoadFn load);
  // NOT_FOUND when unknown; returns the pool key of the registration that was removed.
  absl::StatusOr<std::string> Unregister(const std::string& id);
  // NOT_FOUND when unknown; returns the registration's pool key.
  absl::StatusOr<std::string> SetPinned(const std::string& id, bool pinned);
  // The registration of `id`, marked used now; NOT_FOUND when unknown.
  absl::StatusOr<RegisteredAdapter> Use(const std::string& id);
  std::optional<std::string> PoolKey(const std::string& id) const;
  // The registration of `id` without marking it used.
  std::optional<RegisteredAdapter> Find(const std::string& id) const;
  bool Contains(const std::string& id) const;
  // Every registration, ordered by id.
  std::vector<RegisteredAdapter> List() const;
  size_t size() const;

 private:
  mutable std::mutex mu_;  // guards entries_ and next_registration_
  std::map<std::string, RegisteredAdapter> entries_;
  uint64_t next_registration_ = 1;
};

}  // namespace loraserve
