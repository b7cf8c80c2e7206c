#include "runtime/merge_controller.h"

#include "runtime/adapter_pool.h"

namespace loraserve {

absl::Status MergeController::Merge(const std::shared_ptr<const LoraAdapter>& adapter,
                                    const std::string& key) {
  if (auto s = Unmerge(); !s.ok()) return s;
  const ModelConfig& config = model_->config();
  Backend& backend = model_->backend();
  absl::Status status;
  for (int l = 0; l < adapter->num_layers && status.ok(); ++l) {
    for (int m = 0; m < kNumModules && status.ok(); ++m) {
      const auto& module = adapter->modules[l][m];
      if (!module) continue;
      const Module mod = static_cast<Module>(m);
      std::vector<float> dora;
      if (!module->dora_magnitude.empty()) {
        dora = DoraScale(*module, model_->PristineWeight(l, mod), config.Dims(mod));
      }
      const WeightHandle weight = model_->WeightOf(l, mod);
      status = backend.MergeLora(weight, *module, dora);
      if (status.ok()) touched_.push_back(weight);
    }
  }
  if (!status.ok()) {
    for (WeightHandle weight : touched_) backend.RestoreWeight(weight).IgnoreError();
    touched_.clear();
    return status;
  }
  merged_id_ = key;
  merged_adapter_id_ = adapter->id;
  ++switches_;
  return absl::OkStatus();
}

absl::Status MergeController::Unmerge() {
  if (merged_id_.empty()) return absl::OkStatus();
  absl::Status status;
  for (WeightHandle weight : touched_) {
    if (auto s = model_->backend().RestoreWeight(weight); !s.ok() && status.ok()) status = s;
  }
  touched_.clear();
  merged_id_.clear();
  merged_adapter_id_.clear();
  ++switches_;
  return status;
}

}  // namespace loraserve
