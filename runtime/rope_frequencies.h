// Inverse RoPE frequencies for a model config, with Llama-3 or linear rope_scaling applied.
#pragma once

#include <vector>

#include "formats/model_config.h"

namespace loraserve {

std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace loraserve
