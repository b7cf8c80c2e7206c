#include "cli/local_adapters.h"

#include <filesystem>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/adapter_set.h"

namespace loraserve::cli {
namespace {

absl::StatusOr<std::pair<std::string, float>> ParseSpec(const std::string& spec) {
  const size_t at = spec.rfind('@');
  if (at == std::string::npos) return std::make_pair(spec, 1.0f);
  float weight = 0;
  if (!absl::SimpleAtof(spec.substr(at + 1), &weight)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--adapter: weight in '", spec, "' is not a number"));
  }
  return std::make_pair(spec.substr(0, at), weight);
}

}  // namespace

absl::StatusOr<std::vector<std::shared_ptr<const LoraAdapter>>> LoadAdapterFolders(
    const ModelConfig& config, const std::vector<std::string>& specs) {
  std::vector<std::shared_ptr<const LoraAdapter>> out;
  std::set<std::string> seen;
  for (const std::string& spec : specs) {
    auto parsed = ParseSpec(spec);
    if (!parsed.ok()) return parsed.status();
    const std::string& path = parsed->first;
    if (!seen.insert(path).second) continue;
    // Errors name the folder; the id is the path, unique where folder names may not be.
    std::string name = std::filesystem::path(path).lexically_normal().filename().string();
    if (name.empty()) name = path;
    auto adapter = LoadPeftAdapter(name, path, config, AdapterLimits{});
    if (!adapter.ok()) return adapter.status();
    auto shared = std::make_shared<LoraAdapter>(std::move(*adapter));
    shared->id = path;
    out.push_back(std::move(shared));
  }
  return out;
}

absl::StatusOr<std::vector<AdapterRef>> AdapterRefs(const std::vector<std::string>& specs) {
  std::vector<AdapterRef> refs;
  for (const std::string& spec : specs) {
    auto parsed = ParseSpec(spec);
    if (!parsed.ok()) return parsed.status();
    refs.push_back({parsed->first, parsed->second});
  }
  return refs;
}

absl::StatusOr<std::unique_ptr<LocalAdapters>> LocalAdapters::Load(
    const LlamaModel& model, const std::vector<std::string>& specs, AdapterStorage storage) {
  auto out = std::unique_ptr<LocalAdapters>(new LocalAdapters());
  auto loaded = LoadAdapterFolders(model.config(), specs);
  if (!loaded.ok()) return loaded.status();
  for (auto& adapter : *loaded) out->adapters_[adapter->id] = std::move(adapter);
  if (out->adapters_.empty()) return out;
  const auto base = [&model](int layer, Module module) {
    return model.PristineWeight(layer, module);
  };
  const int64_t page_floats = model.KvLayout(16).page_floats();
  int64_t needed = 0;
  for (const auto& [path, adapter] : out->adapters_) {
    needed += AdapterPool::PagesNeeded(*adapter, model.config(), page_floats, storage);
  }
  out->pages_ = std::make_unique<PagePool>(page_floats, static_cast<int32_t>(needed));
  auto memory = model.backend().CreatePool(page_floats, static_cast<int32_t>(needed));
  if (!memory.ok()) return memory.status();
  out->memory_ = std::move(*memory);
  out->pool_ = std::make_unique<AdapterPool>(out->pages_.get(), out->memory_.get(),
                                             model.config(), base, storage);
  for (const auto& [path, adapter] : out->adapters_) {
    auto resident = out->pool_->Acquire(path, adapter);
    if (!resident.ok()) return resident.status();
    out->resident_[path] = *resident;
  }
  return out;
}

absl::StatusOr<AdapterSetView> LocalAdapters::Set(const std::vector<std::string>& specs) const {
  WeightedAdapters adapters;
  AdapterSetView view;
  for (const std::string& spec : specs) {
    auto parsed = ParseSpec(spec);
    if (!parsed.ok()) return parsed.status();
    auto it = adapters_.find(parsed->first);
    if (it == adapters_.end()) {
      return absl::NotFoundError(absl::StrCat("adapter '", parsed->first, "' was not loaded"));
    }
    adapters.emplace_back(it->second, parsed->second);
    view.emplace_back(resident_.at(parsed->first), parsed->second);
  }
  if (auto s = ValidateAdapterSet(adapters); !s.ok()) return s;
  return view;
}

}  // namespace loraserve::cli
