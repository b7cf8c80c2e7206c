// `loraserve logits`: scores a prompt in-process and writes raw little-endian float32 logits,
// the hook the Python parity tests use to compare against transformers and PEFT.
#include <cstdio>
#include <fstream>
#include <iostream>

#include "runtime/generate.h"
#include "server/cli_commands.h"
#include "server/cli_common.h"

namespace loraserve::cli {

void AddLogitsCommand(CLI::App& app, int* exit_code) {
  struct Options {
    std::string model, prompt_ids, out;
    bool all_positions = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("logits", "Write next-token logits for a prompt (float32)");
  cmd->add_option("--model", options->model, "Hugging Face model folder")->required();
  cmd->add_option("--prompt-ids", options->prompt_ids, "Comma-separated token ids")->required();
  cmd->add_option("--out", options->out, "Output file: rows x vocab float32")->required();
  cmd->add_flag("--all-positions", options->all_positions, "Logits for every prompt position");
  cmd->callback([options, exit_code] {
    auto fail = [&](const absl::Status& s) {
      std::cerr << "error: " << s.message() << "\n";
      *exit_code = 1;
    };
    auto prompt = ParseIdList(options->prompt_ids, "--prompt-ids");
    if (!prompt.ok()) return fail(prompt.status());
    auto model = LlamaModel::Load(options->model);
    if (!model.ok()) return fail(model.status());
    auto logits = ScorePrompt(**model, *prompt, options->all_positions);
    if (!logits.ok()) return fail(logits.status());
    std::ofstream out(options->out, std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits->data()),
              static_cast<std::streamsize>(logits->size() * sizeof(float)));
    if (!out) return fail(absl::InternalError("cannot write " + options->out));
  });
}

}  // namespace loraserve::cli
