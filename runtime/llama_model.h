// The Llama-family decoder (Llama 2/3, Mistral, Qwen2), written once against the Backend op set:
// weights live in backend storage behind handles, and one forward pass per engine step runs a
// BatchPlan over the paged KV cache and the step's LoRA plan.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/model_config.h"
#include "kernels/plan/kv_layout.h"
#include "runtime/backend/backend.h"
#include "runtime/batch_plan.h"

namespace loraserve {

struct LayerWeights {
  std::array<WeightHandle, kNumModules> weight;  // [out x in], PyTorch layout
  std::array<WeightHandle, kNumModules> bias;    // invalid when the module has none
  WeightHandle input_norm;
  WeightHandle post_attention_norm;
};

class LlamaModel {
 public:
  // Loads config.json and the safetensors weights of a Hugging Face model folder into
  // `backend` (the CPU backend when null).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& dir,
                                                          std::unique_ptr<Backend> backend = {});

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  kernels::KvPageLayout KvLayout(int block_size) const;
  Backend& backend() const { return *backend_; }

  // Runs every token of the plan; writes [plan.logit_rows.size() x vocab] logits to host memory.
  // KV for the plan's positions is written into `kv_pool` pages named by the block tables; the
  // LoRA plan's offsets index `adapter_pool` (the same storage in the engine).
  absl::Status Forward(const BatchPlan& plan, PoolStorage& kv_pool,
                       const PoolStorage& adapter_pool, const kernels::KvPageLayout& layout,
                       float* logits) const;

  // Handle of one linear module's weights (the merge controller folds adapters into them).
  WeightHandle WeightOf(int layer, Module module) const {
    return layers_[layer].weight[static_cast<int>(module)];
  }
  // Copies of a module's live and pristine (pre-merge) weights, fp32 [out x in].
  std::vector<float> Weight(int layer, Module module) const;
  std::vector<float> PristineWeight(int layer, Module module) const;
  size_t ParameterCount() const;
  // Bytes the backend holds for the weights, in their stored dtypes (pristine copies excluded).
  size_t WeightBytes() const;

 private:
  LlamaModel() = default;
  absl::Status ValidatePlan(const BatchPlan& plan, const kernels::KvPageLayout& layout) const;
  // The forward pass itself. `graph`: the plan is padded for a captured graph, so every module
  // calls LoraApply (segments or not) and only the first `real_logit_rows` logit rows reach the
  // caller's buffer.
  absl::Status RunForward(const BatchPlan& plan, PoolStorage& kv_pool,
                          const PoolStorage& adapter_pool, const kernels::KvPageLayout& layout,
                          float* logits, bool graph, int real_logit_rows) const;
  // `graph`: call LoraApply even without segments (see RunForward).
  absl::Status ApplyLinear(const BatchPlan& plan, const PoolStorage& adapter_pool, int layer,
                           Module module, const Tensor& x, const Tensor& y, bool graph) const;
  // Several modules reading the same x (q/k/v, gate/up; at most 3) as one fused Linear, then
  // each module's LoRA and bias.
  absl::Status ApplyFusedLinear(const BatchPlan& plan, const PoolStorage& adapter_pool, int layer,
                                std::span<const Module> modules, const Tensor& x,
                                std::span<const Tensor> ys, bool graph) const;
  size_t SumOverWeights(bool bytes) const;  // elements, or bytes as stored
  absl::Status ApplyLoraAndBias(const BatchPlan& plan, const PoolStorage& adapter_pool, int layer,
                                Module module, const Tensor& x, const Tensor& y,
                                bool graph) const;

  std::string dir_;
  ModelConfig config_;
  std::unique_ptr<Backend> backend_;
  WeightHandle embed_tokens_;  // [vocab x hidden]
  WeightHandle lm_head_;       // invalid when tied to embed_tokens_
  WeightHandle final_norm_;
  WeightHandle inv_freq_;      // RoPE frequencies [head_dim / 2]
  std::vector<LayerWeights> layers_;
};

}  // namespace loraserve
