// Pre-tokenizers from tokenizer.json ("pre_tokenizer"): split normalized text into the words
// that BPE sees, and (ByteLevel) respell their bytes in the GPT-2 alphabet.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace loraserve::tokenizer {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their sub-pieces, in order; empty pieces are dropped. `starts_text` is
  // true when pieces[0] begins at the start of the input (Metaspace's "first" scheme).
  virtual void PreTokenize(std::vector<std::string>* pieces, bool starts_text) const = 0;
};

// Returns nullptr for JSON null. Supported: Sequence, Split, ByteLevel, Metaspace, Digits.
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& config);

}  // namespace loraserve::tokenizer
