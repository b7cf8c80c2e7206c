// The `loraserve` subcommands. Each lives in its own cli_<name>.cc and registers itself on
// the CLI11 app; main.cc only wires them together.
#pragma once

#include <memory>

#include <CLI/CLI.hpp>

namespace loraserve::cli {

// Each Add*Command registers a subcommand whose callback sets `*exit_code`.
void AddGenerateCommand(CLI::App& app, int* exit_code);
void AddTokenizeCommand(CLI::App& app, int* exit_code);
void AddLogitsCommand(CLI::App& app, int* exit_code);
void AddServeCommand(CLI::App& app, int* exit_code);     // cli_serve.cc
void AddAdaptersCommand(CLI::App& app, int* exit_code);  // cli_adapters.cc: admin client
void AddFuseLocalCommand(CLI::App& app, int* exit_code);  // cli_fuse_local.cc: offline fusion

// cli_generate_remote.cc: `generate --server ADDR`. Call after generate's own options exist and
// keep the returned flags alive with the command; RunRemoteGenerate returns true when it handled
// the command (remote run or a flag error).
struct RemoteGenerateFlags;
std::shared_ptr<RemoteGenerateFlags> AddRemoteGenerateOptions(CLI::App* generate);
bool RunRemoteGenerate(const CLI::App& generate, const RemoteGenerateFlags& flags,
                       int* exit_code);

}  // namespace loraserve::cli
