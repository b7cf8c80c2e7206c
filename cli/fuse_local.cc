// `loraserve fuse-local`: offline fusion of PEFT folders on this machine, without a server. Reads
// only the base model's config.json (shapes), fuses with adapters/fusion.h and writes a PEFT
// folder; the same math the admin FuseAdapters RPC runs, usable in scripts and in the PEFT parity
// test (tests/python/test_fusion_parity.py).
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "adapters/fusion.h"
#include "adapters/peft_writer.h"
#include "cli/commands.h"

namespace loraserve::cli {
namespace {

struct FuseLocalArgs {
  std::string model;
  std::vector<std::string> adapters;
  std::string combination = "cat";
  std::string out;
  int svd_rank = 0;
  double svd_clamp = -1;
  double density = -1;
  std::string majority_sign = "total";
  uint64_t seed = 0;
  int max_rank = 1024;
};

absl::Status Run(const FuseLocalArgs& args) {
  auto base = ModelConfig::FromFile(absl::StrCat(args.model, "/config.json"));
  if (!base.ok()) return base.status();
  auto combination = ParseFuseCombination(args.combination);
  if (!combination.ok()) return combination.status();
  FuseOptions options;
  options.combination = *combination;
  if (args.svd_rank > 0) options.svd_rank = args.svd_rank;
  if (args.svd_clamp >= 0) options.svd_clamp = args.svd_clamp;
  if (args.density >= 0) options.density = args.density;
  if (args.majority_sign == "frequency") {
    options.majority_sign = MajoritySign::kFrequency;
  } else if (args.majority_sign != "total") {
    return absl::InvalidArgumentError("--majority-sign: use total or frequency");
  }
  options.seed = args.seed;

  AdapterLimits limits;
  limits.max_rank = args.max_rank;
  std::vector<LoraAdapter> adapters;
  std::vector<double> weights;
  adapters.reserve(args.adapters.size());
  for (const std::string& spec : args.adapters) {
    const size_t at = spec.rfind('@');
    double weight = 1.0;
    if (at != std::string::npos && !absl::SimpleAtod(spec.substr(at + 1), &weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--adapter: weight in '", spec, "' is not a number"));
    }
    const std::string path = spec.substr(0, at);
    auto adapter =
        LoadPeftAdapter(std::filesystem::path(path).filename().string(), path, *base, limits);
    if (!adapter.ok()) return adapter.status();
    adapters.push_back(*std::move(adapter));
    weights.push_back(weight);
  }
  std::vector<FuseSource> sources;
  for (size_t i = 0; i < adapters.size(); ++i) sources.push_back({&adapters[i], weights[i]});
  const std::string id = std::filesystem::path(args.out).filename().string();
  auto fused = FuseAdapters(id, sources, options);
  if (!fused.ok()) return fused.status();
  if (absl::Status s = WritePeftFolder(*fused, args.out); !s.ok()) return s;
  std::cout << "fused " << sources.size() << " adapters with " << FuseCombinationName(*combination)
            << " into " << args.out << " (max rank " << fused->max_rank << ")\n";
  return absl::OkStatus();
}

}  // namespace

void AddFuseLocalCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<FuseLocalArgs>();
  CLI::App* cmd = app.add_subcommand("fuse-local",
                                     "Fuse PEFT adapter folders offline (PEFT "
                                     "add_weighted_adapter) into a new one");
  cmd->add_option("--model", args->model, "Base model folder (only config.json is read)")
      ->required();
  cmd->add_option("--adapter", args->adapters, "PATH[@WEIGHT] of a PEFT folder (repeat)")
      ->required();
  cmd->add_option("--combination", args->combination,
                  "linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, "
                  "dare_linear_svd, "
                  "dare_ties_svd, magnitude_prune, magnitude_prune_svd")
      ->capture_default_str();
  cmd->add_option("--out", args->out, "Output PEFT folder")->required();
  cmd->add_option("--svd-rank", args->svd_rank, "Rank of *_svd results; 0 = largest source r")
      ->capture_default_str();
  cmd->add_option("--svd-clamp", args->svd_clamp,
                  "Quantile at which SVD factors are clamped; negative = no clamp")
      ->capture_default_str();
  cmd->add_option("--density", args->density,
                  "Fraction kept by TIES/DARE/magnitude_prune, in (0, 1]")
      ->capture_default_str();
  cmd->add_option("--majority-sign", args->majority_sign, "TIES sign election: total, frequency")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of DARE's random drop")->capture_default_str();
  cmd->add_option("--max-rank", args->max_rank, "Largest source rank accepted")
      ->capture_default_str();
  cmd->callback([args, exit_code] {
    if (absl::Status s = Run(*args); !s.ok()) {
      std::cerr << "fuse-local: " << s.message() << "\n";
      *exit_code = 1;
    }
  });
}

}  // namespace loraserve::cli
