// The server's view of adapters: the crash-safe store on disk and the engine's registry kept
// in step. Every new adapter is validated against the base model before it is published to the
// store, so a rejected upload leaves both the store and the adapter list unchanged.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/adapter_store.h"
#include "adapters/fusion.h"
#include "adapters/lora_adapter.h"
#include "runtime/engine.h"

namespace loraserve::server {

struct AdapterManagerOptions {
  AdapterLimits limits;
  // Total bytes of one upload (all files); larger uploads are RESOURCE_EXHAUSTED.
  size_t max_upload_bytes = 256ull << 20;
  // LoadAdapter paths must resolve under this folder; empty disables LoadAdapter.
  std::string load_root;
};

struct ManagedAdapter {
  AdapterInfo info;
  std::string sha256;
  bool stored = false;  // in the store (else registered from --adapter-dir only)
  std::string source;   // the folder it came from (a load path, an --adapter-dir folder, the store)
};

class AdapterManager {
 public:
  // `store` may be null (no --store): uploads are then FAILED_PRECONDITION.
  AdapterManager(Engine* engine, AdapterStore* store, ModelConfig base,
                 AdapterManagerOptions options);

  // Registers every adapter in the store; entries that fail validation are logged through
  // `log` and skipped (they stay on disk).
  void RegisterStored(const std::function<void(const std::string&)>& log);
  // Registers every subfolder of `dir` (id = folder name) without storing it.
  absl::Status RegisterDirectory(const std::string& dir,
                                 const std::function<void(const std::string&)>& log);
  // Validates and registers one PEFT folder as `id` without storing it (--adapter-dir entries,
  // the HTTP LoRA resolver). ALREADY_EXISTS when the id is taken.
  absl::StatusOr<ManagedAdapter> RegisterFolder(const std::string& id, const std::string& folder);

  // Validates, stores and registers an uploaded PEFT adapter (file name -> bytes).
  absl::StatusOr<ManagedAdapter> Upload(const std::string& id,
                                        const std::map<std::string, std::string>& files,
                                        const std::string& expected_sha256);
  // The same from a server-side folder under options.load_root.
  absl::StatusOr<ManagedAdapter> LoadFromPath(const std::string& id, const std::string& path);
  // Unregisters (new requests NOT_FOUND at once) and, unless `keep_in_store`, deletes it from
  // the store. Returns the requests still using it.
  absl::StatusOr<int> Unload(const std::string& id, bool keep_in_store);
  absl::StatusOr<ManagedAdapter> Pin(const std::string& id, bool pinned);
  // Fuses registered adapters offline (adapters/fusion.h: PEFT's add_weighted_adapter), then
  // stores and registers the result as `new_id` exactly like an upload of its PEFT files.
  absl::StatusOr<ManagedAdapter> Fuse(const std::string& new_id,
                                      const std::vector<std::pair<std::string, double>>& sources,
                                      const FuseOptions& options);

  std::vector<ManagedAdapter> List() const;
  // Whether `id` is registered now; cheap (no engine call), for per-request routing.
  bool Has(const std::string& id) const;
  absl::StatusOr<ManagedAdapter> Get(const std::string& id) const;
  int registered() const;
  const AdapterManagerOptions& options() const { return options_; }

 private:
  absl::Status CheckNew(const std::string& id) const;
  absl::StatusOr<ManagedAdapter> StoreAndRegister(
      const std::string& id,
      const std::function<absl::StatusOr<StoredAdapter>(const PutOptions&)>& put,
      const std::string& expected_sha256, const std::string& source,
      std::optional<LoraAdapter> preparsed = std::nullopt);

  Engine* const engine_;
  AdapterStore* const store_;
  const std::shared_ptr<const ModelConfig> base_;  // shared with the stored adapters' loaders
  const AdapterManagerOptions options_;

  // Guards sha256_ and stored_ and serialises register/unregister so the engine's registry
  // and the store change together.
  mutable std::mutex mutex_;
  std::map<std::string, std::string> sha256_;  // every registered adapter
  std::set<std::string> stored_;               // the registered adapters that are in the store
  std::map<std::string, std::string> source_;  // every registered adapter's folder
  std::set<std::string> pending_;              // ids with an upload or load in flight
};

}  // namespace loraserve::server
