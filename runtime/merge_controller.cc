#include "runtime/merge_controller.h"

#include "runtime/adapter_pool.h"
#include "runtime/engine.h"

namespace loraserve {

void MergeController::Merge(const std::shared_ptr<const LoraAdapter>& adapter,
                            const std::string& key) {
  Unmerge();
  const ModelConfig& config = model_->config();
  for (int l = 0; l < adapter->num_layers; ++l) {
    for (int m = 0; m < kNumModules; ++m) {
      const auto& module = adapter->modules[l][m];
      if (!module) continue;
      const Module mod = static_cast<Module>(m);
      const ModuleDims dims = config.Dims(mod);
      std::vector<float>& weight = model_->MutableWeight(l, mod);
      pristine_[{l, m}] = weight;
      const std::vector<float>& base = pristine_[{l, m}];
      std::vector<float> dora;
      if (!module->dora_magnitude.empty()) dora = DoraScale(*module, base, dims);
      for (int o = 0; o < dims.out; ++o) {
        float* row = &weight[static_cast<size_t>(o) * dims.in];
        for (int r = 0; r < module->rank; ++r) {
          const float b = module->scaling * module->b[static_cast<size_t>(o) * module->rank + r];
          const float* a = &module->a[static_cast<size_t>(r) * dims.in];
          for (int i = 0; i < dims.in; ++i) row[i] += b * a[i];
        }
        if (!dora.empty()) {
          for (int i = 0; i < dims.in; ++i) row[i] *= dora[o];
        }
      }
    }
  }
  merged_id_ = key;
  merged_adapter_id_ = adapter->id;
  ++switches_;
}

void MergeController::Unmerge() {
  if (merged_id_.empty()) return;
  for (auto& [key, weights] : pristine_) {
    model_->MutableWeight(key.first, static_cast<Module>(key.second)) = std::move(weights);
  }
  pristine_.clear();
  merged_id_.clear();
  merged_adapter_id_.clear();
  ++switches_;
}

const std::vector<float>& MergeController::PristineWeight(int layer, Module module) const {
  auto it = pristine_.find({layer, static_cast<int>(module)});
  return it != pristine_.end() ? it->second : model_->Weight(layer, module);
}

std::string MergeController::Decide(MergeMode mode, const std::string& forced_id,
                                    const std::optional<std::string>& single_adapter, bool idle,
                                    Clock::time_point now, Clock::duration window) {
  if (mode == MergeMode::kNever) return "";
  if (idle) return merged_id_;  // nothing runs: keep whatever is merged, no churn
  if (!single_adapter) {
    candidate_.reset();
    return "";
  }
  if (mode == MergeMode::kForced) return *single_adapter == forced_id ? forced_id : "";
  if (*single_adapter == merged_id_) return merged_id_;
  if (candidate_ != single_adapter) {
    candidate_ = single_adapter;
    candidate_since_ = now;
  }
  return now - candidate_since_ >= window ? *single_adapter : "";
}

void MergeController::Tick(Clock::time_point now) {
  if (last_tick_) {
    const double dt = std::chrono::duration<double>(now - *last_tick_).count();
    (merged() ? seconds_merged_ : seconds_unmerged_) += dt;
  }
  last_tick_ = now;
}

}  // namespace loraserve
