#include "runtime/adapter_registry.h"

#include "absl/strings/str_cat.h"

namespace loraserve {
namespace {

absl::Status NotLoaded(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not loaded"));
}

}  // namespace

AdapterInfo DescribeAdapter(const RegisteredAdapter& entry) {
  AdapterInfo info;
  info.id = entry.adapter->id;
  info.pinned = entry.pinned;
  info.max_rank = entry.adapter->max_rank;
  info.alpha = entry.adapter->config.lora_alpha;
  for (int m = 0; m < kNumModules; ++m) {
    for (const auto& layer : entry.adapter->modules) {
      if (layer[m]) {
        info.target_modules.push_back(kModuleNames[m]);
        break;
      }
    }
  }
  info.bytes = entry.adapter->weight_bytes;
  info.last_used = entry.last_used;
  return info;
}

absl::Status AdapterRegistry::Register(std::shared_ptr<const LoraAdapter> adapter) {
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.count(adapter->id)) {
    return absl::AlreadyExistsError(absl::StrCat("adapter '", adapter->id, "' is already loaded"));
  }
  RegisteredAdapter entry;
  entry.pool_key = absl::StrCat(adapter->id, "#", next_registration_++);
  entry.last_used = std::chrono::system_clock::now();
  entry.adapter = std::move(adapter);
  const std::string id = entry.adapter->id;
  entries_.emplace(id, std::move(entry));
  return absl::OkStatus();
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
