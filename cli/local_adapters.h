// `--adapter PATH[@WEIGHT]` for the in-process CLI: loads PEFT folders once each, makes them
// resident in a private page pool sized to fit them all, and builds validated adapter sets.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/adapter_pool.h"
#include "runtime/engine.h"
#include "runtime/scoring.h"
#include "runtime/llama_model.h"

namespace loraserve::cli {

class LocalAdapters {
 public:
  // Loads every distinct PATH among `specs` (PATH or PATH@WEIGHT).
  static absl::StatusOr<std::unique_ptr<LocalAdapters>> Load(
      const LlamaModel& model, const std::vector<std::string>& specs,
      AdapterStorage storage = AdapterStorage::kAuto);
  // The set for `specs` (every PATH must have been loaded); empty specs = base model.
  absl::StatusOr<AdapterSetView> Set(const std::vector<std::string>& specs) const;
  const PoolStorage* pool() const { return memory_.get(); }

 private:
  std::unique_ptr<PagePool> pages_;
  std::unique_ptr<PoolStorage> memory_;
  std::unique_ptr<AdapterPool> pool_;
  std::map<std::string, std::shared_ptr<const LoraAdapter>> adapters_;  // by path
  std::map<std::string, const ResidentLora*> resident_;                // by path
};

// The distinct PEFT folders among `specs`, each parsed against `config` with its path as id
// (paths are unique where folder names may not be).
absl::StatusOr<std::vector<std::shared_ptr<const LoraAdapter>>> LoadAdapterFolders(
    const ModelConfig& config, const std::vector<std::string>& specs);
// `specs` as engine adapter refs (id = path), in order.
absl::StatusOr<std::vector<AdapterRef>> AdapterRefs(const std::vector<std::string>& specs);

}  // namespace loraserve::cli
