// config.json of a Hugging Face Llama-family model (LlamaForCausalLM, MistralForCausalLM,
// Qwen2ForCausalLM) reduced to what the forward pass needs, plus the shapes of the linear
// modules that LoRA adapters may target.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace loraserve {

struct RopeScaling {
  enum class Kind { kLinear, kLlama3 };
  Kind kind = Kind::kLinear;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192;
};

// The seven linear modules of a Llama decoder layer, in PEFT's naming.
enum class Module { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumModules = 7;
inline constexpr std::array<const char*, kNumModules> kModuleNames = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
std::optional<Module> ModuleFromName(std::string_view name);
// "self_attn" or "mlp": the parent in the Hugging Face module path.
const char* ModuleParent(Module module);

struct ModuleDims {
  int in = 0;
  int out = 0;
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  std::string model_type;    // "llama", "mistral", "qwen2"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2, or Llama's attention_bias
  bool o_bias = false;    // Llama's attention_bias only
  bool mlp_bias = false;
  std::optional<int> bos_token_id;
  std::vector<int> eos_token_ids;

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  ModuleDims Dims(Module module) const;
  bool HasBias(Module module) const;

  static absl::StatusOr<ModelConfig> FromJson(std::string_view text, const std::string& label);
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
};

}  // namespace loraserve
