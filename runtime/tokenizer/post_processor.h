// Post-processors from tokenizer.json ("post_processor"), reduced to what single-sequence
// encoding needs: the special-token ids placed before and after the sequence.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace loraserve::tokenizer {

struct PostProcessor {
  std::vector<int32_t> prefix;  // e.g. BOS for Llama 2's TemplateProcessing
  std::vector<int32_t> suffix;
};

// Supported: null, TemplateProcessing, ByteLevel (adds nothing), BertProcessing,
// RobertaProcessing and Sequence of these.
absl::StatusOr<PostProcessor> ParsePostProcessor(const nlohmann::json& config);

}  // namespace loraserve::tokenizer
