#include "runtime/adapter_registry.h"

#include "absl/strings/str_cat.h"

namespace loraserve {
namespace {

absl::Status NotLoaded(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not loaded"));
}

}  // namespace

AdapterSummary SummarizeAdapter(const LoraAdapter& adapter) {
  AdapterSummary summary;
  summary.id = adapter.id;
  summary.max_rank = adapter.max_rank;
  summary.alpha = adapter.config.lora_alpha;
  for (int m = 0; m < kNumModules; ++m) {
    for (const auto& layer : adapter.modules) {
      if (layer[m]) {
        summary.target_modules.push_back(kModuleNames[m]);
        break;
      }
    }
  }
  summary.bytes = adapter.weight_bytes;
  summary.use_dora = adapter.use_dora;
  summary.num_layers = adapter.num_layers;
  return summary;
}

AdapterInfo DescribeAdapter(const RegisteredAdapter& entry) {
  AdapterInfo info;
  info.id = entry.summary.id;
  info.pinned = entry.pinned;
  info.max_rank = entry.summary.max_rank;
  info.alpha = entry.summary.alpha;
  info.target_modules = entry.summary.target_modules;
  info.bytes = entry.summary.bytes;
  info.last_used = entry.last_used;
  return info;
}

absl::StatusOr<std::string> AdapterRegistry::Register(AdapterSummary summary, AdapterLoadFn load) {
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.count(summary.id)) {
    return absl::AlreadyExistsError(absl::StrCat("adapter '", summary.id, "' is already loaded"));
  }
  RegisteredAdapter entry;
  entry.pool_key = absl::StrCat(summary.id, "#", next_registration_++);
  entry.last_used = std::chrono::system_clock::now();
  entry.summary = std::move(summary);
  entry.load = std::move(load);
  const std::string id = entry.summary.id;
  std::string key = entry.pool_key;
  entries_.emplace(id, std::move(entry));
  return key;
}

absl::StatusOr<std::string> AdapterRegistry::Unregister(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return NotLoaded(id);
  std::string key = std::move(it->second.pool_key);
  entries_.erase(it);
  return key;
}

absl::StatusOr<std::string> AdapterRegistry::SetPinned(const std::string& id, bool pinned) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return NotLoaded(id);
  it->second.pinned = pinned;
  return it->second.pool_key;
}

absl::StatusOr<RegisteredAdapter> AdapterRegistry::Use(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return NotLoaded(id);
  it->second.last_used = std::chrono::system_clock::now();
  return it->second;
}

std::optional<std::string> AdapterRegistry::PoolKey(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  return it->second.pool_key;
}

std::optional<RegisteredAdapter> AdapterRegistry::Find(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

bool AdapterRegistry::Contains(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.count(id) != 0;
}

std::vector<RegisteredAdapter> AdapterRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RegisteredAdapter> out;
  out.reserve(entries_.size());
  for (const auto& [id, entry] : entries_) out.push_back(entry);
  return out;
}

size_t AdapterRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace loraserve
