// Decoders from tokenizer.json ("decoder"): turn the token strings of an id sequence back into
// text. Each step rewrites the list of token strings, as the reference's decode_chain does.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace loraserve::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// Returns nullptr for JSON null (tokens are then joined with spaces). Supported: ByteLevel,
// ByteFallback, Metaspace, Strip, Fuse, Replace, Sequence.
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& config);

}  // namespace loraserve::tokenizer
