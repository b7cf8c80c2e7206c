// `loraserve generate`: one request in-process (model loaded, prompt run, tokens printed as
// they are sampled).
#include <iostream>

#include "runtime/generate.h"
#include "server/cli_commands.h"
#include "server/cli_adapters_local.h"
#include "server/cli_common.h"

namespace loraserve::cli {

void AddGenerateCommand(CLI::App& app, int* exit_code) {
  struct Options {
    std::vector<std::string> adapters;
    std::string model, prompt_ids;
    int max_tokens = 32;
    float temperature = 0.0f, top_p = 1.0f;
    int top_k = 0;
    uint64_t seed = 0;
    bool print_ids = false;
    bool ignore_eos = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text for one prompt in-process");
  cmd->add_option("--model", options->model, "Hugging Face model folder")->required();
  cmd->add_option("--adapter", options->adapters,
                  "PEFT adapter folder, optionally PATH@WEIGHT; repeat for a weighted set");
  cmd->add_option("--prompt-ids", options->prompt_ids, "Prompt as comma-separated token ids")
      ->required();
  cmd->add_option("--max-tokens", options->max_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", options->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", options->top_k, "0 = off")->capture_default_str();
  cmd->add_option("--top-p", options->top_p, "1 = off")->capture_default_str();
  cmd->add_option("--seed", options->seed, "Sampling seed")->capture_default_str();
  cmd->add_flag("--print-ids", options->print_ids, "Also print the generated ids, comma-separated");
  cmd->add_flag("--ignore-eos", options->ignore_eos, "Do not stop at the model's EOS token");
  AddRemoteGenerateOptions(cmd);
  cmd->callback([options, exit_code, cmd] {
    if (RunRemoteGenerate(*cmd, exit_code)) return;
    auto fail = [&](const absl::Status& s) {
      std::cerr << "error: " << s.message() << "\n";
      *exit_code = 1;
    };
    auto prompt = ParseIdList(options->prompt_ids, "--prompt-ids");
    if (!prompt.ok()) return fail(prompt.status());
    auto model = LlamaModel::Load(options->model);
    if (!model.ok()) return fail(model.status());
    auto adapters = LocalAdapters::Load(**model, options->adapters);
    if (!adapters.ok()) return fail(adapters.status());
    auto set = (*adapters)->Set(options->adapters);
    if (!set.ok()) return fail(set.status());
    GenerateOptions gen;
    gen.max_tokens = options->max_tokens;
    gen.sampling = {options->temperature, options->top_k, options->top_p, options->seed};
    if (!options->ignore_eos) gen.stop_token_ids = (*model)->config().eos_token_ids;
    auto tokens = GenerateSingle(**model, *prompt, gen, {&*set, (*adapters)->pool()});
    if (!tokens.ok()) return fail(tokens.status());
    if (options->print_ids) std::cout << JoinIds(*tokens) << "\n";
  });
}

}  // namespace loraserve::cli
