// Builders for adapter tests: a tiny Llama base config, PEFT adapter_config.json text and
// safetensors files written byte by byte, so every validation rule can be hit with a few lines.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "adapters/lora_adapter.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "formats/dtype.h"
#include "formats/model_config.h"
#include "formats/safetensors.h"

namespace loraserve::testing {

// hidden 16, intermediate 24, 2 layers, 4 heads of dim 4, 2 kv heads: q/o 16x16, k/v 16->8,
// gate/up 16->24, down 24->16.
inline ModelConfig TinyBase() {
  const char* json = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0})";
  auto config = ModelConfig::FromJson(json, "tiny config.json");
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

struct TestTensor {
  std::string name;
  std::string dtype = "F32";
  std::vector<int64_t> shape;
  std::vector<float> values;  // converted to `dtype` (F32, BF16, F16 via F32 bits, I32)
};

inline std::string SafetensorsBytes(const std::vector<TestTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const TestTensor& t : tensors) {
    const size_t begin = data.size();
    for (float v : t.values) {
      if (t.dtype == "F32") {
        data.append(reinterpret_cast<const char*>(&v), 4);
      } else if (t.dtype == "BF16") {
        const uint16_t bits = FloatToBf16(v);
        data.append(reinterpret_cast<const char*>(&bits), 2);
      } else if (t.dtype == "I32") {
        const int32_t i = static_cast<int32_t>(v);
        data.append(reinterpret_cast<const char*>(&i), 4);
      } else {
        ADD_FAILURE() << "unsupported test dtype " << t.dtype;
      }
    }
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string head = header.dump();
  while (head.size() % 8 != 0) head.push_back(' ');
  const uint64_t n = head.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + head + data;
}

inline std::unique_ptr<SafetensorsFile> TestFile(const std::vector<TestTensor>& tensors) {
  auto file = SafetensorsFile::FromBuffer(SafetensorsBytes(tensors), "adapter_model.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? *std::move(file) : nullptr;
}

// A config as peft 0.13.2 writes it, with `overrides` merged on top (null values stay null).
inline std::string LoraConfigJson(const nlohmann::json& overrides = nlohmann::json::object()) {
  nlohmann::json config = {{"alpha_pattern", nlohmann::json::object()},
                           {"base_model_name_or_path", "tiny"},
                           {"bias", "none"},
                           {"fan_in_fan_out", false},
                           {"inference_mode", true},
                           {"init_lora_weights", true},
                           {"layer_replication", nullptr},
                           {"layers_pattern", nullptr},
                           {"layers_to_transform", nullptr},
                           {"loftq_config", nlohmann::json::object()},
                           {"lora_alpha", 16},
                           {"lora_dropout", 0.05},
                           {"megatron_config", nullptr},
                           {"megatron_core", "megatron.core"},
                           {"modules_to_save", nullptr},
                           {"peft_type", "LORA"},
                           {"r", 4},
                           {"rank_pattern", nlohmann::json::object()},
                           {"revision", nullptr},
                           {"target_modules", {"q_proj", "v_proj"}},
                           {"task_type", "CAUSAL_LM"},
                           {"use_dora", false},
                           {"use_rslora", false}};
  for (auto it = overrides.begin(); it != overrides.end(); ++it) config[it.key()] = it.value();
  return config.dump();
}

inline std::string ModuleKey(int layer, Module module) {
  return "base_model.model.model.layers." + std::to_string(layer) + "." + ModuleParent(module) +
         "." + kModuleNames[static_cast<int>(module)];
}

// Deterministic, distinct values: element i of tensor `salt` is salt + i / 1024.
inline std::vector<float> Ramp(size_t n, float salt) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = salt + static_cast<float>(i) / 1024.0f;
  return v;
}

// lora_A [rank, in] and lora_B [out, rank] (and a DoRA magnitude [out]) for one module.
inline void AddModule(std::vector<TestTensor>& tensors, const ModelConfig& base, int layer,
                      Module module, int rank, bool dora = false) {
  const ModuleDims dims = base.Dims(module);
  const float salt = static_cast<float>(layer * 10 + static_cast<int>(module));
  const std::string key = ModuleKey(layer, module);
  tensors.push_back({key + ".lora_A.weight",
                     "F32",
                     {rank, dims.in},
                     Ramp(static_cast<size_t>(rank) * dims.in, salt)});
  tensors.push_back({key + ".lora_B.weight",
                     "F32",
                     {dims.out, rank},
                     Ramp(static_cast<size_t>(dims.out) * rank, -salt)});
  if (dora) {
    tensors.push_back({key + ".lora_magnitude_vector",
                       "F32",
                       {dims.out},
                       Ramp(static_cast<size_t>(dims.out), 1.0f + salt)});
  }
}

// A temporary directory removed with everything under it.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "loraserve_test_XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace loraserve::testing
