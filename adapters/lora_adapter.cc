// Tensor naming follows what peft 0.13.2 save_pretrained writes for a Llama-family model:
//   base_model.model.model.layers.<N>.<self_attn|mlp>.<module>.lora_A.weight   [r, in]
//   ...lora_B.weight [out, r]      ...lora_magnitude_vector [out] (DoRA; older PEFT: .weight)
// Anything else in the file is rejected by name, because silently ignoring a tensor would serve
// a model different from the one the user trained.
#include "adapters/lora_adapter.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "adapters/sha256.h"

namespace loraserve {
namespace {

constexpr absl::string_view kPrefix = "base_model.model.";
constexpr absl::string_view kBaseHint = " was this adapter trained for a different base model?";

enum class Part { kA, kB, kMagnitude };

struct ModuleSlot {
  const TensorView* a = nullptr;
  const TensorView* b = nullptr;
  const TensorView* magnitude = nullptr;
};

std::string ShapeString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

class AdapterParser {
 public:
  AdapterParser(std::string_view id, const PeftConfig& config, const SafetensorsFile& weights,
                const ModelConfig& base, const AdapterLimits& limits)
      : id_(id), config_(config), weights_(weights), base_(base), limits_(limits) {}

  absl::StatusOr<LoraAdapter> Parse() {
    slots_.assign(static_cast<size_t>(base_.num_layers), {});
    for (const TensorView& tensor : weights_.tensors()) {
      if (absl::Status s = Classify(tensor); !s.ok()) return s;
    }
    LoraAdapter adapter;
    adapter.id = std::string(id_);
    adapter.config = config_;
    adapter.num_layers = base_.num_layers;
    adapter.use_dora = config_.use_dora;
    adapter.modules.resize(slots_.size());
    int present = 0;
    for (int layer = 0; layer < base_.num_layers; ++layer) {
      for (int m = 0; m < kNumModules; ++m) {
        const ModuleSlot& slot = slots_[layer][m];
        if (slot.a == nullptr && slot.b == nullptr && slot.magnitude == nullptr) continue;
        absl::StatusOr<LoraModuleWeights> weights =
            CheckModule(layer, static_cast<Module>(m), slot);
        if (!weights.ok()) return weights.status();
        adapter.max_rank = std::max(adapter.max_rank, weights->rank);
        for (const TensorView* tensor : {slot.a, slot.b, slot.magnitude}) {
          if (tensor != nullptr) adapter.weight_bytes += sizeof(float) * tensor->numel();
        }
        adapter.modules[layer][m] = *std::move(weights);
        ++present;
      }
    }
    if (present == 0) {
      return Error(absl::StrCat(weights_.label(),
                                ": contains no LoRA tensors (expected names like "
                                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight)"));
    }
    // Checked before any conversion so an oversized upload never allocates its fp32 copy.
    if (adapter.weight_bytes > limits_.max_bytes) {
      return Error(absl::StrCat(weights_.label(), ": the adapter needs ", adapter.weight_bytes,
                                " bytes as fp32, above this server's limit of ", limits_.max_bytes,
                                " bytes per adapter"));
    }
    for (int layer = 0; layer < base_.num_layers; ++layer) {
      for (int m = 0; m < kNumModules; ++m) {
        if (!adapter.modules[layer][m].has_value()) continue;
        if (absl::Status s = Convert(slots_[layer][m], *adapter.modules[layer][m]); !s.ok()) {
          return s;
        }
      }
    }
    return adapter;
  }

 private:
  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat("adapter '", id_, "': ", message));
  }
  absl::Status TensorError(const TensorView& tensor, absl::string_view what) const {
    return Error(absl::StrCat(weights_.label(), ": tensor '", tensor.name, "' ", what));
  }

  // Explains why a tensor that is not a decoder-layer LoRA tensor cannot be served.
  absl::Status Unsupported(const TensorView& tensor, absl::string_view rest) const {
    if (absl::StrContains(rest, "lora_embedding_")) {
      return TensorError(tensor,
                         "is a LoRA on the token embeddings; only the linear modules of the "
                         "decoder layers (q/k/v/o/gate/up/down_proj) are supported");
    }
    if (absl::StartsWith(rest, "lm_head.lora_") ||
        absl::StartsWith(rest, "model.embed_tokens.lora_")) {
      return TensorError(tensor,
                         "is a LoRA on lm_head/embed_tokens; only the linear modules of the "
                         "decoder layers (q/k/v/o/gate/up/down_proj) are supported");
    }
    for (const std::string& module : config_.modules_to_save) {
      std::string path(rest);
      for (absl::string_view suffix : {".weight", ".bias"}) {
        if (absl::EndsWith(path, suffix)) path.resize(path.size() - suffix.size());
      }
      absl::StrReplaceAll({{".base_layer", ""}}, &path);
      if (path == module || absl::EndsWith(path, absl::StrCat(".", module))) {
        return TensorError(tensor,
                           absl::StrCat("is a full copy of module '", module,
                                        "' listed in modules_to_save; loraserve serves LoRA "
                                        "deltas on a shared frozen base, so retrain without "
                                        "modules_to_save"));
      }
    }
    if (absl::EndsWith(rest, ".bias")) {
      return TensorError(
          tensor, absl::StrCat("is a bias tensor (adapter_config.json has bias=\"", config_.bias,
                               "\"); trained biases are not supported, retrain "
                               "with bias=\"none\""));
    }
    return TensorError(tensor,
                       "is not a LoRA tensor of a decoder-layer linear module (expected names "
                       "like base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight)");
  }

  absl::Status Classify(const TensorView& tensor) {
    const absl::string_view name = tensor.name;
    if (!absl::StartsWith(name, kPrefix)) return Unsupported(tensor, name);
    const absl::string_view rest = name.substr(kPrefix.size());
    Part part;
    absl::string_view key = rest;
    if (absl::ConsumeSuffix(&key, ".lora_A.weight")) {
      part = Part::kA;
    } else if (absl::ConsumeSuffix(&key, ".lora_B.weight")) {
      part = Part::kB;
    } else if (absl::ConsumeSuffix(&key, ".lora_magnitude_vector") ||
               absl::ConsumeSuffix(&key, ".lora_magnitude_vector.weight")) {
      part = Part::kMagnitude;
    } else {
      return Unsupported(tensor, rest);
    }
    // key = model.layers.<N>.<parent>.<module>
    const std::vector<absl::string_view> pieces = absl::StrSplit(key, '.');
    int layer = -1;
    if (pieces.size() != 5 || pieces[0] != "model" || pieces[1] != "layers" ||
        std::from_chars(pieces[2].data(), pieces[2].data() + pieces[2].size(), layer).ec !=
            std::errc() ||
        layer < 0) {
      return Unsupported(tensor, rest);
    }
    const std::optional<Module> module =
        ModuleFromName(std::string_view(pieces[4].data(), pieces[4].size()));
    if (!module.has_value()) {
      return TensorError(tensor, absl::StrCat("targets module '", pieces[4],
                                              "', which is not a linear module of a "
                                              "Llama-family layer (supported: ",
                                              absl::StrJoin(kModuleNames, ", "), ");", kBaseHint));
    }
    if (pieces[3] != ModuleParent(*module)) {
      return TensorError(tensor, absl::StrCat("puts ", pieces[4], " under '", pieces[3],
                                              "', but in this base model it lives under '",
                                              ModuleParent(*module), "';", kBaseHint));
    }
    if (layer >= base_.num_layers) {
      return TensorError(tensor, absl::StrCat("is for layer ", layer, " but the base model has ",
                                              base_.num_layers, " layers;", kBaseHint));
    }
    if (!config_.TargetsModule(std::string_view(key.data(), key.size()))) {
      return TensorError(tensor, absl::StrCat("belongs to module '", key,
                                              "', which adapter_config.json does not target "
                                              "(check target_modules and layers_to_transform)"));
    }
    ModuleSlot& slot = slots_[layer][static_cast<int>(*module)];
    const TensorView** field = part == Part::kA   ? &slot.a
                               : part == Part::kB ? &slot.b
                                                  : &slot.magnitude;
    if (*field != nullptr) {
      return TensorError(tensor, absl::StrCat("duplicates '", (*field)->name, "'"));
    }
    *field = &tensor;
    return absl::OkStatus();
  }

  absl::Status CheckShape(const TensorView& tensor, std::span<const int64_t> expected,
                          absl::string_view what) const {
    if (!IsFloatDType(tensor.dtype)) {
      return TensorError(tensor, absl::StrCat("has dtype ", std::string(DTypeName(tensor.dtype)),
                                              "; LoRA weights must be F32, F16, BF16 or F64"));
    }
    if (!std::equal(tensor.shape.begin(), tensor.shape.end(), expected.begin(), expected.end())) {
      return TensorError(tensor, absl::StrCat("has shape ", ShapeString(tensor.shape),
                                              ", expected ", ShapeString(expected), " ", what));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<LoraModuleWeights> CheckModule(int layer, Module module,
                                                const ModuleSlot& slot) const {
    const std::string key = absl::StrCat("model.layers.", layer, ".", ModuleParent(module), ".",
                                         kModuleNames[static_cast<int>(module)]);
    const std::string tensor_base = absl::StrCat(kPrefix, key);
    if (slot.a == nullptr || slot.b == nullptr) {
      return Error(absl::StrCat(weights_.label(), ": module '", key, "' has ",
                                slot.a == nullptr ? "no" : "a", " lora_A and ",
                                slot.b == nullptr ? "no" : "a",
                                " lora_B tensor; both are required (missing '", tensor_base,
                                slot.a == nullptr ? ".lora_A.weight" : ".lora_B.weight", "')"));
    }
    if (config_.use_dora && slot.magnitude == nullptr) {
      return Error(absl::StrCat(weights_.label(), ": adapter_config.json has use_dora=true but '",
                                tensor_base, ".lora_magnitude_vector' is missing"));
    }
    if (!config_.use_dora && slot.magnitude != nullptr) {
      return TensorError(*slot.magnitude,
                         "is a DoRA magnitude but adapter_config.json has use_dora=false");
    }
    const PeftModuleHyper hyper = config_.HyperFor(key);
    const ModuleDims dims = base_.Dims(module);
    if (hyper.rank > limits_.max_rank) {
      return TensorError(
          *slot.a, absl::StrCat("has rank ", hyper.rank, ", above this server's maximum LoRA rank ",
                                limits_.max_rank, " (raise the rank limit or use a smaller r)"));
    }
    const std::array<int64_t, 2> a_shape = {hyper.rank, dims.in};
    const std::array<int64_t, 2> b_shape = {dims.out, hyper.rank};
    const std::string where = absl::StrCat(
        "(r=", hyper.rank, " from adapter_config.json r/rank_pattern; in_features=", dims.in,
        ", out_features=", dims.out, " from the base model);");
    if (absl::Status s = CheckShape(*slot.a, a_shape, absl::StrCat("= [r, in] ", where, kBaseHint));
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            CheckShape(*slot.b, b_shape, absl::StrCat("= [out, r] ", where, kBaseHint));
        !s.ok()) {
      return s;
    }
    if (slot.magnitude != nullptr) {
      const std::array<int64_t, 1> m_shape = {dims.out};
      if (absl::Status s =
              CheckShape(*slot.magnitude, m_shape, absl::StrCat("= [out_features];", kBaseHint));
          !s.ok()) {
        return s;
      }
    }
    LoraModuleWeights weights;
    weights.rank = hyper.rank;
    weights.scaling = static_cast<float>(config_.ScalingFor(hyper));
    return weights;
  }

  absl::Status Convert(const ModuleSlot& slot, LoraModuleWeights& weights) {
    for (auto [tensor, out] : {std::pair{slot.a, &weights.a}, std::pair{slot.b, &weights.b},
                               std::pair{slot.magnitude, &weights.dora_magnitude}}) {
      if (tensor == nullptr) continue;
      out->resize(static_cast<size_t>(tensor->numel()));
      if (absl::Status s = weights_.ReadFloatInto(*tensor, tensor->shape, *out); !s.ok()) {
        return absl::InvalidArgumentError(s.message());
      }
      for (size_t i = 0; i < out->size(); ++i) {
        if (!std::isfinite((*out)[i])) {
          return TensorError(
              *tensor, absl::StrCat("contains a non-finite value (", (*out)[i], ") at element ", i,
                                    "; the adapter is corrupt or diverged in "
                                    "training"));
        }
      }
    }
    if (slot.a->dtype == slot.b->dtype &&
        (slot.a->dtype == DType::kF16 || slot.a->dtype == DType::kBF16)) {
      weights.source_dtype = slot.a->dtype;
    }
    return absl::OkStatus();
  }

  std::string id_;
  const PeftConfig& config_;
  const SafetensorsFile& weights_;
  const ModelConfig& base_;
  const AdapterLimits& limits_;
  std::vector<std::array<ModuleSlot, kNumModules>> slots_;  // [layer][Module]
};

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<LoraAdapter> ParsePeftAdapter(std::string_view id, std::string_view config_json,
                                             const SafetensorsFile& weights,
                                             const ModelConfig& base, const AdapterLimits& limits) {
  absl::StatusOr<PeftConfig> config = ParsePeftConfig(
      config_json, absl::StrCat("adapter '", std::string(id), "': ", kAdapterConfigFile));
  if (!config.ok()) return config.status();
  return AdapterParser(id, *config, weights, base, limits).Parse();
}

absl::StatusOr<LoraAdapter> LoadPeftAdapter(std::string_view id, const std::string& dir,
                                            const ModelConfig& base, const AdapterLimits& limits) {
  const std::string config_path = absl::StrCat(dir, "/", kAdapterConfigFile);
  const std::string weights_path = absl::StrCat(dir, "/", kAdapterWeightsFile);
  absl::StatusOr<std::string> config_json = ReadSmallFile(config_path);
  if (!config_json.ok()) return config_json.status();
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> weights = SafetensorsFile::Open(weights_path);
  if (!weights.ok()) return weights.status();
  absl::StatusOr<LoraAdapter> adapter = ParsePeftAdapter(id, *config_json, **weights, base, limits);
  if (!adapter.ok()) return adapter.status();
  absl::StatusOr<std::string> digest = Sha256File(weights_path);
  if (!digest.ok()) return digest.status();
  adapter->sha256 = *std::move(digest);
  return adapter;
}

}  // namespace loraserve
