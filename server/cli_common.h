// Small helpers shared by the CLI subcommands.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace loraserve::cli {

// "1,2,3" -> {1, 2, 3}; names `field` in the error.
// Help text of every command's --adapter-dtype (values: runtime/adapter_pool.h AdapterStorage).
inline constexpr char kAdapterDtypeHelp[] =
    "How adapter weights are held in memory: auto = as the file stores them (bf16/fp16 files stay "
    "16-bit, lossless), fp32, or bf16 (rounds fp32 adapters: half the memory and bandwidth)";

absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text, const std::string& field);
std::string JoinIds(const std::vector<int32_t>& ids);

}  // namespace loraserve::cli
