#include "cli/common.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace loraserve::cli {

absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text,
                                                 const std::string& field) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id) || id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": '", part, "' is not a non-negative integer token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

std::string JoinIds(const std::vector<int32_t>& ids) { return absl::StrJoin(ids, ","); }

void AddAdapterDtypeOption(CLI::App* cmd, AdapterStorage* storage) {
  cmd->add_option_function<std::string>(
         "--adapter-dtype",
         [storage](const std::string& name) { *storage = *ParseAdapterStorage(name); },
         "How adapter weights are held in memory: auto = as the file stores them (bf16/fp16 "
         "files stay 16-bit, lossless), fp32, or bf16 (rounds fp32 adapters: half the memory "
         "and bandwidth)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}))  // what ParseAdapterStorage accepts
      ->default_str(AdapterStorageName(*storage));
}

void AddBackendOptions(CLI::App* cmd, BackendChoice* choice) {
  cmd->add_option_function<std::string>(
         "--device",
         [choice](const std::string& name) { choice->device = *ParseDeviceKind(name); },
         "Where the forward pass runs: auto = the CUDA backend when this build has it and a GPU "
         "answers, else the CPU (the log says which); cpu; cuda (fails when there is none)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda", "gpu"}))  // what ParseDeviceKind accepts
      ->default_str("auto");
  cmd->add_option("--cuda-device", choice->cuda_device, "GPU ordinal for --device cuda")
      ->check(CLI::NonNegativeNumber)
      ->default_val(0);
  CpuBackendOptions* options = &choice->cpu;
  cmd->add_option_function<std::string>(
         "--weight-dtype",
         [options](const std::string& name) { options->weight_dtype = *ParseWeightDtype(name); },
         "How the base model's matrices are held in memory: auto = as the files store them "
         "on the CPU (bf16/fp16 checkpoints stay 16-bit, lossless: half the bytes per decode "
         "step) and bf16 on CUDA (an fp16 file stays fp16), fp32, bf16 or fp16 (rounds wider "
         "files)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16", "fp16"}))  // what ParseWeightDtype accepts
      ->default_str("auto");
  cmd->add_option_function<std::string>(
         "--cpu-isa", [options](const std::string& name) { options->isa = *ParseCpuIsa(name); },
         "SIMD kernels: auto = the widest this CPU runs (AVX-512, else AVX2), avx2 (e.g. to "
         "measure the AVX2 path on an AVX-512 machine), portable")
      ->check(CLI::IsMember({"auto", "avx2", "portable"}))
      ->default_str("auto");
}

}  // namespace loraserve::cli
