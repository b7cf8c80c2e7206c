// A tiny generated Hugging Face model shared by runtime tests: tools/gen_model.py writes it
// (through the project's virtualenv) into a /tmp folder keyed on the generator's bytes and flags,
// and random LoRA adapters are built in memory against its config.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "adapters/lora_adapter.h"
#include "runtime/llama_model.h"

namespace loraserve::testing {

// FNV-1a, 64-bit: stable across builds and runs, unlike std::hash, so a cache key survives.
inline uint64_t Fnv1a(std::string_view bytes, uint64_t hash = 14695981039346656037ull) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

// 16 hex digits over tools/gen_model.py's content and the flags: an edited generator or other
// flags name another folder, so a stale model is never reused.
inline std::string GeneratorKey(const std::string& flags) {
  const std::string script = std::string(LORASERVE_SOURCE_DIR) + "/tools/gen_model.py";
  std::ifstream in(script, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  if (!in) ADD_FAILURE() << "cannot read the model generator " << script;
  uint64_t hash = Fnv1a(content.str());
  hash = Fnv1a(std::string_view("\0", 1), hash);  // "ab"+"c" and "a"+"bc" differ
  hash = Fnv1a(flags, hash);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash));
  return hex;
}

inline std::string GeneratedModelDir(const std::string& name, const std::string& flags) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("loraserve_test_" + name + "_" + GeneratorKey(flags));
  if (!fs::exists(dir / "config.json")) {
    // ctest runs test processes in parallel: generate privately, then publish with one rename.
    const fs::path staging = dir.string() + ".tmp." + std::to_string(::getpid());
    const std::string source = LORASERVE_SOURCE_DIR;
    const std::string cmd = source + "/.venv/bin/python " + source + "/tools/gen_model.py --out " +
                            staging.string() + " " + flags + " > /dev/null";
    if (std::system(cmd.c_str()) != 0) {
      ADD_FAILURE() << "model generation failed: " << cmd;
    }
    std::error_code ignored;
    fs::rename(staging, dir, ignored);  // loses the race harmlessly when another won
    fs::remove_all(staging, ignored);
  }
  return dir.string();
}

inline std::unique_ptr<LlamaModel> LoadTinyModel() {
  auto model = LlamaModel::Load(GeneratedModelDir("tiny_llama", "--seed 3 --layers 2"));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// A random LoRA adapter on the given modules (all layers), B nonzero.
inline std::shared_ptr<LoraAdapter> RandomAdapter(const ModelConfig& config, const std::string& id,
                                                  int rank, uint32_t seed,
                                                  std::vector<Module> modules = {Module::kQ,
                                                                                 Module::kV,
                                                                                 Module::kDown}) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  auto adapter = std::make_shared<LoraAdapter>();
  adapter->id = id;
  adapter->num_layers = config.num_layers;
  adapter->max_rank = rank;
  adapter->config.r = rank;
  adapter->config.lora_alpha = 2.0 * rank;
  adapter->modules.resize(config.num_layers);
  for (int l = 0; l < config.num_layers; ++l) {
    for (Module m : modules) {
      const ModuleDims dims = config.Dims(m);
      LoraModuleWeights w;
      w.rank = rank;
      w.scaling = 2.0f;
      w.a.resize(static_cast<size_t>(rank) * dims.in);
      w.b.resize(static_cast<size_t>(dims.out) * rank);
      for (float& v : w.a) v = normal(rng);
      for (float& v : w.b) v = normal(rng);
      adapter->weight_bytes += (w.a.size() + w.b.size()) * sizeof(float);
      adapter->modules[l][static_cast<int>(m)] = std::move(w);
    }
  }
  return adapter;
}

}  // namespace loraserve::testing
