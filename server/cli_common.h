// Small helpers shared by the CLI subcommands.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace loraserve::cli {

// "1,2,3" -> {1, 2, 3}; names `field` in the error.
absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text, const std::string& field);
std::string JoinIds(const std::vector<int32_t>& ids);

}  // namespace loraserve::cli
