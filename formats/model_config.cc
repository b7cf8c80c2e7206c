// Field names and defaults follow transformers' LlamaConfig / MistralConfig / Qwen2Config.
#include "formats/model_config.h"

#include <fstream>
#include <limits>
#include <sstream>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace loraserve {
namespace {

using json = nlohmann::json;

// `root[key]` when it holds a T, `fallback` when it is absent or null, and an error naming the
// field when it holds anything else (nlohmann's value() would throw instead).
template <typename T>
absl::StatusOr<T> OptionalField(const json& root, const char* key, T fallback,
                                const std::string& label) {
  auto it = root.find(key);
  if (it == root.end() || it->is_null()) return fallback;
  const bool ok = std::is_same_v<T, bool> ? it->is_boolean() : it->is_string();
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": field \"", key, "\" must be a ",
                                                   std::is_same_v<T, bool> ? "boolean" : "string",
                                                   ", got ", it->dump()));
  }
  return it->get<T>();
}

}  // namespace

std::optional<Module> ModuleFromName(std::string_view name) {
  for (int i = 0; i < kNumModules; ++i) {
    if (std::string_view(kModuleNames[i]) == name) return static_cast<Module>(i);
  }
  return std::nullopt;
}

const char* ModuleParent(Module module) {
  return module <= Module::kO ? "self_attn" : "mlp";
}

ModuleDims ModelConfig::Dims(Module module) const {
  switch (module) {
    case Module::kQ: return {hidden_size, q_dim()};
    case Module::kK:
    case Module::kV: return {hidden_size, kv_dim()};
    case Module::kO: return {q_dim(), hidden_size};
    case Module::kGate:
    case Module::kUp: return {hidden_size, intermediate_size};
    case Module::kDown: return {intermediate_size, hidden_size};
  }
  return {};
}

bool ModelConfig::HasBias(Module module) const {
  switch (module) {
    case Module::kQ:
    case Module::kK:
    case Module::kV: return qkv_bias;
    case Module::kO: return o_bias;
    default: return mlp_bias;
  }
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(std::string_view text, const std::string& label) {
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not a JSON object"));
  }
  auto missing = [&](const std::string& field) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": missing or invalid required field \"", field, "\""));
  };
  // Positive and within int, so that no dimension truncates to 0 or below.
  auto get_int = [&](const char* field, int* out) -> bool {
    auto it = root.find(field);
    if (it == root.end() || !it->is_number_integer() || it->get<int64_t>() <= 0 ||
        it->get<int64_t>() > std::numeric_limits<int>::max()) {
      return false;
    }
    *out = it->get<int>();
    return true;
  };
  auto get_string = [&](const char* field, const char* fallback, std::string* out) {
    absl::StatusOr<std::string> v = OptionalField<std::string>(root, field, fallback, label);
    if (v.ok()) *out = *std::move(v);
    return v.status();
  };
  auto get_bool = [&](const char* field, bool* out) {
    absl::StatusOr<bool> v = OptionalField<bool>(root, field, false, label);
    if (v.ok()) *out = *v;
    return v.status();
  };
  ModelConfig c;
  if (root.contains("architectures") && root["architectures"].is_array() &&
      !root["architectures"].empty() && root["architectures"][0].is_string()) {
    c.architecture = root["architectures"][0].get<std::string>();
  }
  if (absl::Status s = get_string("model_type", "", &c.model_type); !s.ok()) return s;
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2") {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": model_type \"", c.model_type,
        "\" is not supported (supported: llama, mistral, qwen2 — the Llama family)"));
  }
  for (auto [field, out] : {std::pair{"vocab_size", &c.vocab_size},
                            std::pair{"hidden_size", &c.hidden_size},
                            std::pair{"intermediate_size", &c.intermediate_size},
                            std::pair{"num_hidden_layers", &c.num_layers},
                            std::pair{"num_attention_heads", &c.num_heads}}) {
    if (!get_int(field, out)) return missing(field);
  }
  if (!root.contains("num_key_value_heads") || root["num_key_value_heads"].is_null()) {
    c.num_kv_heads = c.num_heads;
  } else if (!get_int("num_key_value_heads", &c.num_kv_heads)) {
    return missing("num_key_value_heads");
  }
  if (root.contains("head_dim") && !root["head_dim"].is_null()) {
    if (!get_int("head_dim", &c.head_dim)) return missing("head_dim");
  } else {
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": hidden_size (", c.hidden_size, ") is smaller than num_attention_heads (",
        c.num_heads, "), so head_dim would be 0; set head_dim"));
  }
  if (int64_t{c.num_heads} * c.head_dim > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": num_attention_heads x head_dim (",
                                                   c.num_heads, " x ", c.head_dim,
                                                   ") is too large"));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": num_attention_heads (", c.num_heads,
                                                   ") is not a multiple of num_key_value_heads (",
                                                   c.num_kv_heads, ")"));
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": head_dim must be even for RoPE"));
  }
  if (!get_int("max_position_embeddings", &c.max_position_embeddings)) {
    c.max_position_embeddings = 2048;
  }
  if (root.contains("rms_norm_eps") && root["rms_norm_eps"].is_number()) {
    c.rms_norm_eps = root["rms_norm_eps"].get<double>();
  }
  if (root.contains("rope_theta") && root["rope_theta"].is_number()) {
    c.rope_theta = root["rope_theta"].get<double>();
  }
  if (absl::Status s = get_bool("tie_word_embeddings", &c.tie_word_embeddings); !s.ok()) {
    return s;
  }
  if (c.model_type == "qwen2") {
    c.qkv_bias = true;
  } else {
    if (absl::Status s = get_bool("attention_bias", &c.qkv_bias); !s.ok()) return s;
    c.o_bias = c.qkv_bias;
    if (absl::Status s = get_bool("mlp_bias", &c.mlp_bias); !s.ok()) return s;
  }
  if (root.contains("hidden_act") && root["hidden_act"] != "silu") {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": hidden_act ", root["hidden_act"].dump(), " is not supported (silu)"));
  }
  if (root.contains("rope_scaling") && root["rope_scaling"].is_object()) {
    const json& rs = root["rope_scaling"];
    std::string type;
    for (const char* field : {"type", "rope_type"}) {  // rope_type, the newer name, wins
      absl::StatusOr<std::string> v = OptionalField<std::string>(rs, field, type, label);
      if (!v.ok()) return v.status();
      type = *std::move(v);
    }
    RopeScaling scaling;
    if (!rs.contains("factor") || !rs["factor"].is_number()) return missing("rope_scaling.factor");
    scaling.factor = rs["factor"].get<double>();
    if (type == "llama3") {
      scaling.kind = RopeScaling::Kind::kLlama3;
      for (auto [field, out] :
           {std::pair{"low_freq_factor", &scaling.low_freq_factor},
            std::pair{"high_freq_factor", &scaling.high_freq_factor},
            std::pair{"original_max_position_embeddings",
                      &scaling.original_max_position_embeddings}}) {
        if (!rs.contains(field) || !rs[field].is_number()) {
          return missing(absl::StrCat("rope_scaling.", field));
        }
        *out = rs[field].get<double>();
      }
    } else if (type == "linear") {
      scaling.kind = RopeScaling::Kind::kLinear;
    } else if (type != "default") {
      return absl::InvalidArgumentError(absl::StrCat(
          label, ": rope_scaling type \"", type, "\" is not supported (llama3, linear, default)"));
    }
    if (type != "default") c.rope_scaling = scaling;
  }
  if (root.contains("bos_token_id") && root["bos_token_id"].is_number_integer()) {
    c.bos_token_id = root["bos_token_id"].get<int>();
  }
  if (root.contains("eos_token_id")) {
    const json& eos = root["eos_token_id"];
    if (eos.is_number_integer()) c.eos_token_ids.push_back(eos.get<int>());
    if (eos.is_array()) {
      for (const json& e : eos) {
        if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<int>());
      }
    }
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open config"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return FromJson(buffer.str(), path);
}

}  // namespace loraserve
