// `loraserve logits`: scores prompts in-process and writes raw little-endian float32 logits,
// the hook the Python parity tests use to compare against transformers and PEFT. With
// --batch-file, every line is one request and all of them run in ONE forward pass.
#include <fstream>
#include <iostream>

#include "nlohmann/json.hpp"
#include "runtime/scoring.h"
#include "cli/local_adapters.h"
#include "cli/commands.h"
#include "cli/common.h"

namespace loraserve::cli {
namespace {

struct BatchLine {
  std::vector<int32_t> prompt;
  std::vector<std::string> adapters;  // PATH@WEIGHT specs
};

// Lines: {"prompt_ids": [..], "adapters": ["path@0.5", ...]}
absl::StatusOr<std::vector<BatchLine>> ReadBatch(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("--batch-file: cannot open " + path);
  std::vector<BatchLine> lines;
  std::string text;
  while (std::getline(in, text)) {
    if (text.empty()) continue;
    auto json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_discarded() || !json.contains("prompt_ids")) {
      return absl::InvalidArgumentError("--batch-file: line " + std::to_string(lines.size() + 1) +
                                        " is not {\"prompt_ids\": [...]}");
    }
    BatchLine line;
    line.prompt = json["prompt_ids"].get<std::vector<int32_t>>();
    if (json.contains("adapters")) line.adapters = json["adapters"].get<std::vector<std::string>>();
    lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace

void AddLogitsCommand(CLI::App& app, int* exit_code) {
  struct Options {
    std::vector<std::string> adapters;
    std::string model, prompt_ids, batch_file, out;
    bool all_positions = false;
    AdapterStorage adapter_storage = AdapterStorage::kAuto;
    BackendChoice backend_options;
  };
  auto options = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("logits", "Write next-token logits for prompts (float32)");
  cmd->add_option("--model", options->model, "Hugging Face model folder")->required();
  cmd->add_option("--adapter", options->adapters,
                  "PEFT adapter folder, optionally PATH@WEIGHT; repeat for a weighted set");
  cmd->add_option("--prompt-ids", options->prompt_ids, "Comma-separated token ids");
  cmd->add_option("--batch-file", options->batch_file,
                  "JSON lines {\"prompt_ids\":[..],\"adapters\":[\"PATH@W\",..]} run as one batch");
  cmd->add_option("--out", options->out, "Output file: rows x vocab float32")->required();
  cmd->add_flag("--all-positions", options->all_positions, "Logits for every prompt position");
  AddAdapterDtypeOption(cmd, &options->adapter_storage);
  AddBackendOptions(cmd, &options->backend_options);
  cmd->callback([options, exit_code] {
    auto fail = [&](const absl::Status& s) {
      std::cerr << "error: " << s.message() << "\n";
      *exit_code = 1;
    };
    auto backend = CreateBackend(options->backend_options);
    if (!backend.ok()) return fail(backend.status());
    auto model = LlamaModel::Load(options->model, std::move(backend->backend));
    if (!model.ok()) return fail(model.status());
    const AdapterStorage storage = options->adapter_storage;
    absl::StatusOr<std::vector<float>> logits;
    if (!options->batch_file.empty()) {
      auto batch = ReadBatch(options->batch_file);
      if (!batch.ok()) return fail(batch.status());
      std::vector<std::string> all_specs;
      for (const BatchLine& line : *batch) {
        all_specs.insert(all_specs.end(), line.adapters.begin(), line.adapters.end());
      }
      auto adapters = LocalAdapters::Load(**model, all_specs, storage);
      if (!adapters.ok()) return fail(adapters.status());
      std::vector<std::vector<int32_t>> prompts;
      std::vector<AdapterSetView> sets;
      for (const BatchLine& line : *batch) {
        auto set = (*adapters)->Set(line.adapters);
        if (!set.ok()) return fail(set.status());
        prompts.push_back(line.prompt);
        sets.push_back(std::move(*set));
      }
      logits = ScoreBatch(**model, prompts, sets, (*adapters)->pool(), options->all_positions);
    } else {
      auto prompt = ParseIdList(options->prompt_ids, "--prompt-ids");
      if (!prompt.ok()) return fail(prompt.status());
      auto adapters = LocalAdapters::Load(**model, options->adapters, storage);
      if (!adapters.ok()) return fail(adapters.status());
      auto set = (*adapters)->Set(options->adapters);
      if (!set.ok()) return fail(set.status());
      logits = ScorePrompt(**model, *prompt, options->all_positions, {&*set, (*adapters)->pool()});
    }
    if (!logits.ok()) return fail(logits.status());
    std::ofstream out(options->out, std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits->data()),
              static_cast<std::streamsize>(logits->size() * sizeof(float)));
    if (!out) return fail(absl::InternalError("cannot write " + options->out));
  });
}

}  // namespace loraserve::cli
