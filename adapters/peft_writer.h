// Writes a LoraAdapter back out as a PEFT folder (adapter_config.json + fp32
// adapter_model.safetensors with PEFT's tensor names), so fused adapters are stored, listed,
// downloaded and reloaded exactly like uploads and open in PEFT itself.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "adapters/lora_adapter.h"

namespace loraserve {

// File name -> bytes, the shape AdapterStore::PutFromFiles takes. The config's r and lora_alpha are
// those of most modules; modules with another rank or scaling get exact-key rank_pattern and
// alpha_pattern entries, so ParsePeftAdapter (and PEFT) give every module its rank and scaling
// back. use_rslora is always false: each module's scaling is written as alpha / r.
absl::StatusOr<std::map<std::string, std::string>> SerializePeftAdapter(const LoraAdapter& adapter);

// SerializePeftAdapter into `dir` (created if missing; existing files are overwritten).
absl::Status WritePeftFolder(const LoraAdapter& adapter, const std::string& dir);

}  // namespace loraserve
