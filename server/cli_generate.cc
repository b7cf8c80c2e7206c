// `loraserve generate`: one request in-process (model loaded, prompt run, tokens printed as
// they are sampled).
#include <iostream>

#include <filesystem>

#include "runtime/generate.h"
#include "runtime/tokenizer/incremental_detokenizer.h"
#include "runtime/tokenizer/tokenizer.h"
#include "server/cli_commands.h"
#include "server/cli_adapters_local.h"
#include "server/cli_common.h"

namespace loraserve::cli {

void AddGenerateCommand(CLI::App& app, int* exit_code) {
  struct Options {
    std::vector<std::string> adapters;
    std::string model, prompt_ids, chat, system;
    int max_tokens = 32;
    float temperature = 0.0f, top_p = 1.0f;
    int top_k = 0;
    uint64_t seed = 0;
    bool print_ids = false;
    bool ignore_eos = false;
    AdapterStorage adapter_storage = AdapterStorage::kAuto;
  };
  auto options = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text for one prompt in-process");
  cmd->add_option("--model", options->model, "Hugging Face model folder")->required();
  cmd->add_option("--adapter", options->adapters,
                  "PEFT adapter folder, optionally PATH@WEIGHT; repeat for a weighted set");
  AddAdapterDtypeOption(cmd, &options->adapter_storage);
  cmd->add_option("--prompt-ids", options->prompt_ids, "Prompt as comma-separated token ids");
  cmd->add_option("--chat", options->chat,
                  "A user message, rendered with the model's chat template");
  cmd->add_option("--system", options->system, "System message for --chat");
  cmd->add_option("--max-tokens", options->max_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", options->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", options->top_k, "0 = off")->capture_default_str();
  cmd->add_option("--top-p", options->top_p, "1 = off")->capture_default_str();
  cmd->add_option("--seed", options->seed, "Sampling seed")->capture_default_str();
  cmd->add_flag("--print-ids", options->print_ids, "Also print the generated ids, comma-separated");
  cmd->add_flag("--ignore-eos", options->ignore_eos, "Do not stop at the model's EOS token");
  std::shared_ptr<RemoteGenerateFlags> remote = AddRemoteGenerateOptions(cmd);
  cmd->callback([options, remote, exit_code, cmd] {
    if (RunRemoteGenerate(*cmd, *remote, exit_code)) return;
    auto fail = [&](const absl::Status& s) {
      std::cerr << "error: " << s.message() << "\n";
      *exit_code = 1;
    };
    const std::string text = cmd->get_option("--prompt")->as<std::string>();
    if (options->model.empty()) return fail(absl::InvalidArgumentError("--model is required"));
    if (static_cast<int>(!options->prompt_ids.empty()) + static_cast<int>(!text.empty()) +
            static_cast<int>(!options->chat.empty()) != 1) {
      return fail(absl::InvalidArgumentError(
          "give exactly one of --prompt-ids, --prompt or --chat"));
    }
    std::unique_ptr<Tokenizer> tokenizer;
    if (std::filesystem::exists(std::filesystem::path(options->model) / "tokenizer.json")) {
      auto loaded = Tokenizer::FromFile(options->model);
      if (!loaded.ok()) return fail(loaded.status());
      tokenizer = std::move(*loaded);
    }
    absl::StatusOr<std::vector<int32_t>> prompt;
    if (!options->prompt_ids.empty()) {
      prompt = ParseIdList(options->prompt_ids, "--prompt-ids");
    } else if (tokenizer == nullptr) {
      prompt = absl::InvalidArgumentError("--prompt/--chat need tokenizer.json in --model");
    } else if (!text.empty()) {
      prompt = tokenizer->Encode(text, /*add_special_tokens=*/true);
    } else {
      std::vector<ChatMessage> messages;
      if (!options->system.empty()) messages.push_back({"system", options->system});
      messages.push_back({"user", options->chat});
      auto rendered = tokenizer->ApplyChatTemplate(messages, /*add_generation_prompt=*/true);
      if (!rendered.ok()) return fail(rendered.status());
      // Templates spell out their special tokens, as transformers' apply_chat_template does.
      prompt = tokenizer->Encode(*rendered, /*add_special_tokens=*/false);
    }
    if (!prompt.ok()) return fail(prompt.status());
    auto model = LlamaModel::Load(options->model);
    if (!model.ok()) return fail(model.status());
    auto adapters = LocalAdapters::Load(**model, options->adapters, options->adapter_storage);
    if (!adapters.ok()) return fail(adapters.status());
    auto set = (*adapters)->Set(options->adapters);
    if (!set.ok()) return fail(set.status());
    GenerateOptions gen;
    gen.max_tokens = options->max_tokens;
    gen.sampling = {options->temperature, options->top_k, options->top_p, options->seed};
    if (!options->ignore_eos) {
      gen.stop_token_ids = (*model)->config().eos_token_ids;
      if (tokenizer) {
        for (int32_t id : tokenizer->eos_ids()) gen.stop_token_ids.push_back(id);
      }
    }
    std::optional<IncrementalDetokenizer> detokenizer;
    if (tokenizer) detokenizer.emplace(*tokenizer, /*skip_special_tokens=*/true);
    auto tokens = GenerateSingle(**model, *prompt, gen, {&*set, (*adapters)->pool()},
                                 [&](int32_t token) {
                                   if (detokenizer) std::cout << detokenizer->Push(token) << std::flush;
                                   return true;
                                 });
    if (!tokens.ok()) return fail(tokens.status());
    if (detokenizer) std::cout << detokenizer->Flush() << "\n";
    if (options->print_ids) std::cout << JoinIds(*tokens) << "\n";
  });
}

}  // namespace loraserve::cli
