// The `loraserve` subcommands. Each lives in its own cli_<name>.cc and registers itself on
// the CLI11 app; main.cc only wires them together.
#pragma once

#include <CLI/CLI.hpp>

namespace loraserve::cli {

// Each Add*Command registers a subcommand whose callback sets `*exit_code`.
void AddGenerateCommand(CLI::App& app, int* exit_code);
void AddTokenizeCommand(CLI::App& app, int* exit_code);
void AddLogitsCommand(CLI::App& app, int* exit_code);
void AddServeCommand(CLI::App& app, int* exit_code);     // cli_serve.cc
void AddAdaptersCommand(CLI::App& app, int* exit_code);  // cli_adapters.cc: admin client

}  // namespace loraserve::cli
