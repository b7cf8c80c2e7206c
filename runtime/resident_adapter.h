// What the forward pass sees of an adapter that is resident in the paged pool: per layer and
// module, the rank, scaling and the pool offsets of every A row and B column (S-LoRA style
// indirection, so pages can sit anywhere and mixed ranks cost no padding).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/plan/lora_plan.h"
#include "formats/model_config.h"

namespace loraserve {

struct ResidentLoraModule {
  int rank = 0;
  float scaling = 0.0f;            // alpha / r, or alpha / sqrt(r) with rsLoRA
  kernels::LoraDtype dtype = kernels::LoraDtype::kF32;  // how the rows below are stored
  std::vector<int64_t> a_rows;     // [rank] pool offsets (4-byte units) of A rows (in elements)
  std::vector<int64_t> b_cols;     // [rank] pool offsets of B columns (out elements each)
  std::vector<float> dora_scale;   // [out] DoRA's magnitude / ||W + s B A||_row; empty if LoRA
};

struct ResidentLora {
  std::string id;
  bool use_dora = false;
  // [layer][Module]; nullopt where the adapter does not target the module.
  std::vector<std::array<std::optional<ResidentLoraModule>, kNumModules>> modules;
};

// An adapter set of one request: (adapter, weight) pairs whose deltas are summed.
using AdapterSetView = std::vector<std::pair<const ResidentLora*, float>>;

}  // namespace loraserve
