// Fuzzes config.json parsing (ModelConfig::FromJson): any text is an error or a config whose
// dimensions are positive and whose module shapes can be computed.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "formats/model_config.h"

using loraserve::ModelConfig;
using loraserve::Module;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config = ModelConfig::FromJson(std::string_view(reinterpret_cast<const char*>(data), size),
                                      "config.json");
  if (!config.ok()) return 0;
  const ModelConfig& c = *config;
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_layers <= 0 ||
      c.num_heads <= 0 || c.num_kv_heads <= 0 || c.head_dim <= 0 ||
      c.max_position_embeddings <= 0 || c.num_heads % c.num_kv_heads != 0) {
    __builtin_trap();  // FromJson promises a usable shape
  }
  for (int m = 0; m < loraserve::kNumModules; ++m) {
    (void)c.Dims(static_cast<Module>(m));
    (void)c.HasBias(static_cast<Module>(m));
  }
  return 0;
}
