// Executes merges for single-tenant traffic: folds one adapter into the live base weights
// through the backend (W + s B A; DoRA: g * (W + s B A)) and restores them bit-identically from
// the backend's pristine copies (never by subtraction). When to merge is MergePolicy's call.
// Not thread-safe: owned by the engine's step loop.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "adapters/lora_adapter.h"
#include "runtime/llama_model.h"

namespace loraserve {

class MergeController {
 public:
  explicit MergeController(LlamaModel* model) : model_(model) {}

  // Merges `adapter` into every module it targets, after unmerging whatever was merged.
  // `key` identifies this registration of the adapter (see AdapterPool::Acquire). On error the
  // base weights are restored and nothing is merged.
  absl::Status Merge(const std::shared_ptr<const LoraAdapter>& adapter, const std::string& key);
  // Restores the pristine weights; a no-op when nothing is merged.
  absl::Status Unmerge();

  const std::string& merged_id() const { return merged_id_; }  // the pool key
  const std::string& merged_adapter_id() const { return merged_adapter_id_; }
  bool merged() const { return !merged_id_.empty(); }
  int64_t switches() const { return switches_; }

 private:
  LlamaModel* model_;
  std::string merged_id_;
  std::string merged_adapter_id_;
  std::vector<WeightHandle> touched_;  // modules holding a merged adapter now
  int64_t switches_ = 0;
};

}  // namespace loraserve
