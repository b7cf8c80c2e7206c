// Everything written is derived from the modules themselves (which modules exist, their ranks and
// scalings), not from the adapter's parsed config, so the files always describe the weights they
// carry: a fused adapter needs no hand-made config.
#include "adapters/peft_writer.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace loraserve {
namespace {

using nlohmann::json;

std::string TensorBase(int layer, int m) {
  return absl::StrCat("base_model.model.model.layers.", layer, ".",
                      ModuleParent(static_cast<Module>(m)), ".", kModuleNames[m]);
}

// rank_pattern keys are regexes PEFT matches as ".*\.{key}$"; escaping the dots makes the key match
// this one module only.
std::string PatternKey(int layer, int m) {
  return absl::StrCat("layers\\.", layer, "\\.", ModuleParent(static_cast<Module>(m)), "\\.",
                      kModuleNames[m]);
}

struct Tensor {
  std::vector<int64_t> shape;
  const std::vector<float>* data;
};

std::string SafetensorsBytes(const std::map<std::string, Tensor>& tensors) {
  json header = json::object();
  size_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const size_t bytes = sizeof(float) * tensor.data->size();
    header[name] = {
        {"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string head = header.dump();
  while (head.size() % 8 != 0) head.push_back(' ');
  const uint64_t head_size = head.size();
  std::string out(sizeof(head_size), '\0');
  std::memcpy(out.data(), &head_size,
              sizeof(head_size));  // little-endian hosts only
  out += head;
  out.reserve(out.size() + offset);
  for (const auto& [name, tensor] : tensors) {
    out.append(reinterpret_cast<const char*>(tensor.data->data()),
               sizeof(float) * tensor.data->size());
  }
  return out;
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> SerializePeftAdapter(
    const LoraAdapter& adapter) {
  // (rank, alpha) -> modules using it; the most common pair becomes r / lora_alpha.
  std::map<std::pair<int, double>, int> hyper_count;
  std::map<std::string, Tensor> tensors;
  std::set<int> kinds;
  std::vector<int> layers;
  for (int layer = 0; layer < static_cast<int>(adapter.modules.size()); ++layer) {
    bool used = false;
    for (int m = 0; m < kNumModules; ++m) {
      const auto& module = adapter.modules[layer][m];
      if (!module.has_value()) continue;
      if (module->rank <= 0 || module->a.size() % module->rank != 0 ||
          module->b.size() % module->rank != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("adapter '", adapter.id, "': module ", TensorBase(layer, m), " has rank ",
                         module->rank, " that does not divide its factor sizes"));
      }
      const int64_t in = static_cast<int64_t>(module->a.size()) / module->rank;
      const int64_t out = static_cast<int64_t>(module->b.size()) / module->rank;
      const std::string base = TensorBase(layer, m);
      tensors[base + ".lora_A.weight"] = {{module->rank, in}, &module->a};
      tensors[base + ".lora_B.weight"] = {{out, module->rank}, &module->b};
      if (adapter.use_dora) {
        tensors[base + ".lora_magnitude_vector"] = {{out}, &module->dora_magnitude};
      }
      ++hyper_count[{module->rank, static_cast<double>(module->scaling) * module->rank}];
      kinds.insert(m);
      used = true;
    }
    if (used) layers.push_back(layer);
  }
  if (tensors.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter '", adapter.id, "' has no modules to write"));
  }
  const auto common =
      std::max_element(hyper_count.begin(), hyper_count.end(),
                       [](const auto& x, const auto& y) { return x.second < y.second; });
  const auto [rank, alpha] = common->first;

  json rank_pattern = json::object();
  json alpha_pattern = json::object();
  for (int layer = 0; layer < static_cast<int>(adapter.modules.size()); ++layer) {
    for (int m = 0; m < kNumModules; ++m) {
      const auto& module = adapter.modules[layer][m];
      if (!module.has_value()) continue;
      const double module_alpha = static_cast<double>(module->scaling) * module->rank;
      if (module->rank == rank && module_alpha == alpha) continue;
      rank_pattern[PatternKey(layer, m)] = module->rank;
      alpha_pattern[PatternKey(layer, m)] = module_alpha;
    }
  }
  std::vector<std::string> targets;
  for (int m : kinds) targets.emplace_back(kModuleNames[m]);
  json config = {
      {"peft_type", "LORA"},
      {"r", rank},
      {"lora_alpha", alpha},
      {"target_modules", targets},
      {"rank_pattern", rank_pattern},
      {"alpha_pattern", alpha_pattern},
      {"use_rslora", false},
      {"use_dora", adapter.use_dora},
      {"bias", "none"},
      {"lora_dropout", 0.0},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"task_type", adapter.config.task_type.empty() ? "CAUSAL_LM" : adapter.config.task_type},
      {"base_model_name_or_path", adapter.config.base_model_name_or_path},
  };
  if (static_cast<int>(layers.size()) != adapter.num_layers) config["layers_to_transform"] = layers;

  std::map<std::string, std::string> files;
  files[kAdapterConfigFile] = config.dump(2) + "\n";
  files[kAdapterWeightsFile] = SafetensorsBytes(tensors);
  return files;
}

absl::Status WritePeftFolder(const LoraAdapter& adapter, const std::string& dir) {
  absl::StatusOr<std::map<std::string, std::string>> files = SerializePeftAdapter(adapter);
  if (!files.ok()) return files.status();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  for (const auto& [name, bytes] : *files) {
    const std::string path = absl::StrCat(dir, "/", name);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  }
  return absl::OkStatus();
}

}  // namespace loraserve
