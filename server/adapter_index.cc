#include "server/adapter_index.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace loraserve::server {
namespace {
using json = nlohmann::json;
}  // namespace

std::string AdapterIndexJson(const AdapterSummary& summary) {
  return json{{"max_rank", summary.max_rank},
              {"lora_alpha", summary.alpha},
              {"target_modules", summary.target_modules},
              {"weight_bytes", summary.bytes},
              {"use_dora", summary.use_dora},
              {"num_layers", summary.num_layers}}
      .dump();
}

absl::StatusOr<AdapterSummary> ParseAdapterIndex(const std::string& id, std::string_view text) {
  const json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const char* field) {
    return absl::DataLossError(
        absl::StrCat("adapter '", id, "': manifest index field '", field,
                     "' is missing or invalid"));
  };
  if (index.is_discarded() || !index.is_object()) return bad("index");
  AdapterSummary summary;
  summary.id = id;
  const auto integer = [&](const char* field, auto* out) -> bool {
    auto it = index.find(field);
    if (it == index.end() || !it->is_number_unsigned()) return false;
    *out = it->get<std::remove_pointer_t<decltype(out)>>();
    return true;
  };
  if (!integer("max_rank", &summary.max_rank) || summary.max_rank < 1) return bad("max_rank");
  if (!integer("weight_bytes", &summary.bytes)) return bad("weight_bytes");
  if (!integer("num_layers", &summary.num_layers)) return bad("num_layers");
  auto alpha = index.find("lora_alpha");
  if (alpha == index.end() || !alpha->is_number()) return bad("lora_alpha");
  summary.alpha = alpha->get<double>();
  auto dora = index.find("use_dora");
  if (dora == index.end() || !dora->is_boolean()) return bad("use_dora");
  summary.use_dora = dora->get<bool>();
  auto targets = index.find("target_modules");
  if (targets == index.end() || !targets->is_array()) return bad("target_modules");
  for (const json& target : *targets) {
    if (!target.is_string()) return bad("target_modules");
    summary.target_modules.push_back(target.get<std::string>());
  }
  return summary;
}

AdapterLoadFn StoredAdapterLoader(const StoredAdapter& entry,
                                  std::shared_ptr<const ModelConfig> base, AdapterLimits limits) {
  return [id = entry.id, path = entry.path, sha256 = entry.adapter_sha256, base = std::move(base),
          limits]() -> absl::StatusOr<std::shared_ptr<const LoraAdapter>> {
    absl::StatusOr<LoraAdapter> adapter = LoadPeftAdapter(id, path, *base, limits);
    if (!adapter.ok()) {
      // It was valid when stored: anything wrong now is damage to the store.
      return absl::DataLossError(
          absl::StrCat("store entry ", path, ": ", adapter.status().message()));
    }
    if (adapter->sha256 != sha256) {
      return absl::DataLossError(absl::StrCat(
          "store entry ", path, ": ", kAdapterWeightsFile, " has sha256 ", adapter->sha256,
          ", its manifest recorded ", sha256, " (damaged after it was stored; upload it again)"));
    }
    return std::make_shared<const LoraAdapter>(*std::move(adapter));
  };
}

}  // namespace loraserve::server
