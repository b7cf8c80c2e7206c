// `loraserve generate`: one request in-process through the engine (model loaded, prompt run,
// text printed as it streams), or against a server with --server.
#include <algorithm>
#include <filesystem>
#include <future>
#include <iostream>

#include "runtime/engine.h"
#include "runtime/adapter_pool.h"
#include "runtime/tokenizer/tokenizer.h"
#include "cli/commands.h"
#include "cli/local_adapters.h"
#include "cli/common.h"

namespace loraserve::cli {
namespace {

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
  BackendChoice backend_options;
};

// One request through the same Engine the server runs (one decode loop for every path), sized
// for it: the prompt prefills in one step, the pool fits its adapters and KV, and merging is
// off so the tokens are the LoRA kernels' like the server's mixed traffic.
absl::StatusOr<std::vector<int32_t>> GenerateInProcess(
    std::unique_ptr<LlamaModel> model,
    const std::vector<std::shared_ptr<const LoraAdapter>>& adapters,
    const std::vector<AdapterRef>& refs, const std::vector<int32_t>& prompt,
    const Options& options, const Tokenizer* tokenizer) {
  EngineOptions engine_options;
  engine_options.max_batch_tokens = std::max<int>(512, static_cast<int>(prompt.size()));
  engine_options.max_running = 1;
  engine_options.merge_mode = MergeMode::kNever;
  engine_options.adapter_storage = options.adapter_storage;
  engine_options.tokenizer = tokenizer;
  const kernels::KvPageLayout layout = model->KvLayout(engine_options.kv_block_size);
  int64_t pages = (static_cast<int64_t>(prompt.size()) + options.max_tokens +
                   engine_options.kv_block_size - 1) / engine_options.kv_block_size;
  for (const auto& adapter : adapters) {
    pages += AdapterPool::PagesNeeded(*adapter, model->config(), layout.page_floats(),
                                      options.adapter_storage);
  }
  engine_options.pool_pages = pages;
  auto engine = Engine::Create(std::move(model), engine_options);
  if (!engine.ok()) return engine.status();
  for (const auto& adapter : adapters) {
    if (auto s = (*engine)->RegisterAdapter(adapter); !s.ok()) return s;
  }
  GenerationRequest request;
  request.prompt_ids = prompt;
  request.adapters = refs;
  request.max_tokens = options.max_tokens;
  request.sampling = {options.temperature, options.top_k, options.top_p, options.seed};
  request.ignore_eos = options.ignore_eos;
  std::promise<RequestResult> done;
  RequestCallbacks callbacks;
  callbacks.on_token = [](const TokenEvent& event) { std::cout << event.text << std::flush; };
  callbacks.on_finish = [&done](const RequestResult& result) { done.set_value(result); };
  auto id = (*engine)->Submit(std::move(request), std::move(callbacks));
  if (!id.ok()) return id.status();
  RequestResult result = done.get_future().get();
  if (!result.status.ok()) return result.status;
  if (tokenizer != nullptr) std::cout << "\n";
  return result.tokens;
}

}  // namespace

void AddGenerateCommand(CLI::App& app, int* exit_code) {
  auto options = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text for one prompt in-process");
  cmd->add_option("--model", options->model, "Hugging Face model folder")->required();
  cmd->add_option("--adapter", options->adapters,
                  "PEFT adapter folder, optionally PATH@WEIGHT; repeat for a weighted set");
  AddAdapterDtypeOption(cmd, &options->adapter_storage);
  AddBackendOptions(cmd, &options->backend_options);
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
    auto backend = CreateBackend(options->backend_options);
    if (!backend.ok()) return fail(backend.status());
    auto model = LlamaModel::Load(options->model, std::move(backend->backend));
    if (!model.ok()) return fail(model.status());
    auto adapters = LoadAdapterFolders((*model)->config(), options->adapters);
    if (!adapters.ok()) return fail(adapters.status());
    auto refs = AdapterRefs(options->adapters);
    if (!refs.ok()) return fail(refs.status());
    auto tokens = GenerateInProcess(std::move(*model), *adapters, *refs, *prompt, *options,
                                    tokenizer.get());
    if (!tokens.ok()) return fail(tokens.status());
    if (options->print_ids) std::cout << JoinIds(*tokens) << "\n";
  });
}

}  // namespace loraserve::cli
