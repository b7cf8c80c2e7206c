// The Llama-family decoder (Llama 2/3, Mistral, Qwen2) on the CPU backend: weights held in
// fp32, one forward pass per engine step over a BatchPlan with a paged KV cache and per-sequence
// adapter sets applied through the LoRA segment kernels.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/paged_attention.h"
#include "runtime/batch_plan.h"
#include "formats/model_config.h"

namespace loraserve {

struct LayerWeights {
  std::array<std::vector<float>, kNumModules> weight;  // [out x in], PyTorch layout
  std::array<std::vector<float>, kNumModules> bias;    // empty when the module has none
  std::vector<float> input_norm;
  std::vector<float> post_attention_norm;
};

class LlamaModel {
 public:
  // Loads config.json and the safetensors weights of a Hugging Face model folder.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  kernels::KvPageLayout KvLayout(int block_size) const;

  // Runs every token of the plan; writes [plan.logit_rows.size() x vocab] logits. KV for the
  // plan's positions is written into `kv_pool` pages named by the block tables.
  absl::Status Forward(const BatchPlan& plan, float* kv_pool, const kernels::KvPageLayout& layout,
                       float* logits) const;

  // Live weights of one linear module; the merge controller folds adapters into them.
  std::vector<float>& MutableWeight(int layer, Module module) {
    return layers_[layer].weight[static_cast<int>(module)];
  }
  const std::vector<float>& Weight(int layer, Module module) const {
    return layers_[layer].weight[static_cast<int>(module)];
  }
  size_t ParameterCount() const;

 private:
  LlamaModel() = default;
  absl::Status ValidatePlan(const BatchPlan& plan, const kernels::KvPageLayout& layout) const;
  void ApplyLinear(const BatchPlan& plan, int layer, Module module, const float* x, int64_t ldx,
                   float* y, int64_t ldy) const;

  std::string dir_;
  ModelConfig config_;
  std::vector<float> embed_tokens_;  // [vocab x hidden]
  std::vector<float> lm_head_;       // empty when tied to embed_tokens_
  std::vector<float> final_norm_;
  std::vector<LayerWeights> layers_;
  std::vector<float> inv_freq_;
};

}  // namespace loraserve
