// Normalizers from tokenizer.json ("normalizer"): text rewrites applied to every span of input
// that is not an added token, before pre-tokenization.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace loraserve::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Normalize(std::string* text) const = 0;
};

// Builds the normalizer described by `config`; returns nullptr for JSON null. Supported:
// Sequence, Prepend, Replace, NFC, NFD, Strip; anything else is an Unimplemented error that
// names the type.
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& config);

}  // namespace loraserve::tokenizer
