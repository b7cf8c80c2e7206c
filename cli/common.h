// Small helpers shared by the CLI subcommands.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "runtime/adapter_pool.h"
#include "runtime/backend/device.h"

namespace loraserve::cli {

// "1,2,3" -> {1, 2, 3}; names `field` in the error.
// --adapter-dtype auto|fp32|bf16 (runtime/adapter_pool.h AdapterStorage), the same on every
// command that holds adapters.
void AddAdapterDtypeOption(CLI::App* cmd, AdapterStorage* storage);

// --weight-dtype auto|fp32|bf16|fp16 and --cpu-isa auto|avx2|portable (the CPU backend's
// options), the same on every command that loads a model.
void AddBackendOptions(CLI::App* cmd, BackendChoice* options);

absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text, const std::string& field);
std::string JoinIds(const std::vector<int32_t>& ids);

}  // namespace loraserve::cli
