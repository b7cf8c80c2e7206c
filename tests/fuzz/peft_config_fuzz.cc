// Fuzzes adapter_config.json parsing (ParsePeftConfig) and, for configs it accepts, PEFT's
// module matching: target_modules regexes and lists, layers_to_transform / layers_pattern, and
// the rank_pattern / alpha_pattern lookup, over the module keys of a small Llama.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/peft_config.h"
#include "formats/model_config.h"

namespace {

const std::vector<std::string>& ModuleKeys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> out;
    for (int layer : {0, 1, 7, 31}) {
      for (int m = 0; m < loraserve::kNumModules; ++m) {
        const auto module = static_cast<loraserve::Module>(m);
        out.push_back("model.layers." + std::to_string(layer) + "." +
                      loraserve::ModuleParent(module) + "." + loraserve::kModuleNames[m]);
      }
    }
    out.push_back("base_model.model.model.layers.3.mlp.up_proj");
    out.push_back("lm_head");
    return out;
  }();
  return keys;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config = loraserve::ParsePeftConfig(
      std::string_view(reinterpret_cast<const char*>(data), size), "adapter_config.json");
  if (!config.ok()) return 0;
  for (const std::string& key : ModuleKeys()) {
    if (!config->TargetsModule(key)) continue;
    const loraserve::PeftModuleHyper hyper = config->HyperFor(key);
    if (hyper.rank <= 0) __builtin_trap();  // ParsePeftConfig accepts positive ranks only
    if (!std::isfinite(config->ScalingFor(hyper))) __builtin_trap();
  }
  return 0;
}
