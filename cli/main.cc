// Entry point of the `loraserve` binary: dispatches to the subcommands in cli_*.cc.
#include <CLI/CLI.hpp>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"loraserve: one base model, many LoRA adapters, one batched forward pass"};
  app.require_subcommand(1);
  int exit_code = 0;
  loraserve::cli::AddGenerateCommand(app, &exit_code);
  loraserve::cli::AddTokenizeCommand(app, &exit_code);
  loraserve::cli::AddLogitsCommand(app, &exit_code);
  loraserve::cli::AddServeCommand(app, &exit_code);
  loraserve::cli::AddAdaptersCommand(app, &exit_code);
  loraserve::cli::AddFuseLocalCommand(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
