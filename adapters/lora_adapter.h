// A PEFT LoRA adapter parsed into fp32 and validated against the base model it will run on.
// Validation is complete at load time (names, shapes, ranks, dtypes, finiteness, size), so the
// runtime and kernels can trust every LoraAdapter they are handed.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/peft_config.h"
#include "formats/model_config.h"
#include "formats/safetensors.h"

namespace loraserve {

inline constexpr char kAdapterConfigFile[] = "adapter_config.json";
inline constexpr char kAdapterWeightsFile[] = "adapter_model.safetensors";

struct LoraModuleWeights {
  int rank = 0;
  // alpha / r, or alpha / sqrt(r) with rsLoRA, from this module's rank/alpha patterns.
  float scaling = 0;
  std::vector<float> a;               // rank x in, row-major (PEFT lora_A.weight)
  std::vector<float> b;               // out x rank, row-major (PEFT lora_B.weight)
  std::vector<float> dora_magnitude;  // [out] lora_magnitude_vector; empty unless DoRA
  // kF16 or kBF16 when both A and B came in that dtype: a and b then hold exactly representable
  // values, and the adapter pool can keep them 16-bit at no loss. kF32 otherwise.
  DType source_dtype = DType::kF32;
};

struct LoraAdapter {
  std::string id;
  PeftConfig config;
  int num_layers = 0;
  // [layer][Module]; nullopt where the adapter leaves the module alone.
  std::vector<std::array<std::optional<LoraModuleWeights>, kNumModules>> modules;
  bool use_dora = false;
  int max_rank = 0;
  size_t weight_bytes = 0;  // fp32 bytes of every A, B and magnitude
  std::string sha256;       // of adapter_model.safetensors; empty when parsed from a view
};

struct AdapterLimits {
  int max_rank = 512;
  size_t max_bytes = 1ull << 30;  // fp32 bytes after conversion
};

// Validates and converts. Every failure is InvalidArgument naming the field or tensor.
absl::StatusOr<LoraAdapter> ParsePeftAdapter(std::string_view id, std::string_view config_json,
                                             const SafetensorsFile& weights,
                                             const ModelConfig& base, const AdapterLimits& limits);

// Reads `dir`/adapter_config.json and `dir`/adapter_model.safetensors and fills `sha256`.
absl::StatusOr<LoraAdapter> LoadPeftAdapter(std::string_view id, const std::string& dir,
                                            const ModelConfig& base, const AdapterLimits& limits);

}  // namespace loraserve
