#include "server/adapter_manager.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "adapters/peft_writer.h"
#include "server/adapter_index.h"

namespace loraserve::server {
namespace {

ManagedAdapter FromInfo(const AdapterInfo& info, const std::string& sha256, bool stored,
                        std::string source) {
  return ManagedAdapter{info, sha256, stored, std::move(source)};
}

}  // namespace

AdapterManager::AdapterManager(Engine* engine, AdapterStore* store, ModelConfig base,
                               AdapterManagerOptions options)
    : engine_(engine),
      store_(store),
      base_(std::make_shared<const ModelConfig>(std::move(base))),
      options_(std::move(options)) {}

absl::Status AdapterManager::CheckNew(const std::string& id) const {
  if (absl::Status s = ValidateAdapterId(id); !s.ok()) return s;
  if (sha256_.contains(id) || pending_.contains(id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("adapter '", id, "' already exists: unload it first or pick another id"));
  }
  return absl::OkStatus();
}

void AdapterManager::RegisterStored(const std::function<void(const std::string&)>& log) {
  if (store_ == nullptr) return;
  int indexed = 0, parsed = 0;
  for (const StoredAdapter& entry : store_->List()) {
    absl::Status status;
    AdapterLoadFn load = StoredAdapterLoader(entry, base_, options_.limits);
    if (!entry.index_json.empty()) {
      // The index entry is all registration needs; the tensors are read on first use.
      absl::StatusOr<AdapterSummary> summary = ParseAdapterIndex(entry.id, entry.index_json);
      status = summary.status();
      if (status.ok()) status = engine_->RegisterStoredAdapter(*std::move(summary), load);
      ++indexed;
    } else {
      // Stored before manifests carried an index: parsed now, and then evictable like the rest.
      absl::StatusOr<std::shared_ptr<const LoraAdapter>> adapter = load();
      status = adapter.status();
      if (status.ok()) status = engine_->RegisterAdapter(*std::move(adapter), load);
      ++parsed;
    }
    if (!status.ok()) {
      log(absl::StrCat("stored adapter '", entry.id, "' skipped: ", status.message()));
      continue;
    }
    std::lock_guard lock(mutex_);
    sha256_[entry.id] = entry.adapter_sha256;
    stored_.insert(entry.id);
    source_[entry.id] = entry.path;
  }
  if (indexed + parsed > 0) {
    log(absl::StrCat("registered ", indexed + parsed, " stored adapters (", indexed,
                     " from their index entries, ", parsed, " parsed: stored without one)"));
  }
}

absl::Status AdapterManager::RegisterDirectory(
    const std::string& dir, const std::function<void(const std::string&)>& log) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--adapter-dir ", dir, " cannot be listed: ", ec.message()));
  }
  std::vector<std::filesystem::path> folders;
  for (const auto& entry : it) {
    if (entry.is_directory()) folders.push_back(entry.path());
  }
  std::sort(folders.begin(), folders.end());
  for (const auto& folder : folders) {
    auto registered = RegisterFolder(folder.filename().string(), folder.string());
    if (!registered.ok()) {
      log(absl::StrCat("adapter folder ", folder.string(), " skipped: ",
                       registered.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ManagedAdapter> AdapterManager::RegisterFolder(const std::string& id,
                                                              const std::string& folder) {
  {
    std::lock_guard lock(mutex_);
    if (absl::Status s = CheckNew(id); !s.ok()) return s;
    pending_.insert(id);
  }
  auto adapter = LoadPeftAdapter(id, folder, *base_, options_.limits);
  absl::Status status = adapter.status();
  std::string sha;
  std::shared_ptr<const LoraAdapter> parsed;
  if (status.ok()) {
    sha = adapter->sha256;
    parsed = std::make_shared<const LoraAdapter>(*std::move(adapter));
    status = engine_->RegisterAdapter(parsed);
  }
  std::lock_guard lock(mutex_);
  pending_.erase(id);
  if (!status.ok()) return status;
  sha256_[id] = sha;
  source_[id] = folder;
  if (std::optional<AdapterInfo> info = engine_->FindAdapter(id)) {
    return FromInfo(*info, sha, false, folder);
  }
  return absl::InternalError(absl::StrCat("adapter '", id, "' vanished after registration"));
}

absl::StatusOr<ManagedAdapter> AdapterManager::StoreAndRegister(
    const std::string& id,
    const std::function<absl::StatusOr<StoredAdapter>(const PutOptions&)>& put,
    const std::string& expected_sha256, const std::string& source,
    std::optional<LoraAdapter> preparsed) {
  {
    std::lock_guard lock(mutex_);
    if (absl::Status s = CheckNew(id); !s.ok()) return s;
    pending_.insert(id);
  }
  std::shared_ptr<LoraAdapter> parsed;
  PutOptions put_options;
  if (!expected_sha256.empty()) put_options.expected_sha256 = expected_sha256;
  if (preparsed.has_value()) {
    parsed = std::make_shared<LoraAdapter>(*std::move(preparsed));
  } else {
    // The validator parses the staged files against the base model (what a folder held when
    // it was copied, not when it was checked); its result is kept so it is not parsed twice.
    put_options.validator = [&](const std::string& staged_dir) -> absl::Status {
      auto adapter = LoadPeftAdapter(id, staged_dir, *base_, options_.limits);
      if (!adapter.ok()) return adapter.status();
      parsed = std::make_shared<LoraAdapter>(*std::move(adapter));
      return absl::OkStatus();
    };
  }
  put_options.index = [&] { return AdapterIndexJson(SummarizeAdapter(*parsed)); };
  auto stored = put(put_options);
  absl::Status status = stored.status();
  if (status.ok()) {
    parsed->sha256 = stored->adapter_sha256;  // hashed once, by the store, while writing
    // Kept in the host tier while there is room; read again from the store once evicted.
    status = engine_->RegisterAdapter(parsed, StoredAdapterLoader(*stored, base_, options_.limits));
    if (!status.ok() && store_ != nullptr) {
      // Keep the store and the engine in step: an adapter the engine refused is not kept.
      (void)store_->Delete(id);
    }
  }
  std::lock_guard lock(mutex_);
  pending_.erase(id);
  if (!status.ok()) return status;
  sha256_[id] = stored->adapter_sha256;
  if (store_ != nullptr) stored_.insert(id);
  source_[id] = source.empty() ? stored->path : source;
  if (std::optional<AdapterInfo> info = engine_->FindAdapter(id)) {
    return FromInfo(*info, stored->adapter_sha256, store_ != nullptr, source_[id]);
  }
  return absl::InternalError(absl::StrCat("adapter '", id, "' vanished after registration"));
}

absl::StatusOr<ManagedAdapter> AdapterManager::Upload(
    const std::string& id, const std::map<std::string, std::string>& files,
    const std::string& expected_sha256) {
  if (store_ == nullptr) {
    return absl::FailedPreconditionError("uploads need an adapter store: start with --store DIR");
  }
  size_t total = 0;
  for (const auto& [name, bytes] : files) total += bytes.size();
  if (total > options_.max_upload_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("upload of ", total, " bytes exceeds the ",
                                                     options_.max_upload_bytes,
                                                     "-byte limit (--max-upload-bytes)"));
  }
  // Validated from the received bytes, before anything touches the disk; the store then writes
  // and hashes them in one pass. An upload missing a file is left to the store to refuse.
  std::optional<LoraAdapter> parsed;
  auto config = files.find(kAdapterConfigFile);
  auto weights = files.find(kAdapterWeightsFile);
  if (config != files.end() && weights != files.end()) {
    if (absl::Status s = ValidateAdapterId(id); !s.ok()) return s;
    auto file = SafetensorsFile::FromBuffer(weights->second, kAdapterWeightsFile);
    if (!file.ok()) return file.status();
    auto adapter = ParsePeftAdapter(id, config->second, **file, *base_, options_.limits);
    if (!adapter.ok()) return adapter.status();
    parsed = *std::move(adapter);
  }
  return StoreAndRegister(
      id, [&](const PutOptions& put) { return store_->PutFromFiles(id, files, put); },
      expected_sha256, "", std::move(parsed));
}

absl::StatusOr<ManagedAdapter> AdapterManager::LoadFromPath(const std::string& id,
                                                            const std::string& path) {
  if (options_.load_root.empty()) {
    return absl::PermissionDeniedError(
        "LoadAdapter is disabled: start the server with --load-root DIR");
  }
  if (absl::Status s = ValidateAdapterId(id); !s.ok()) return s;
  if (path.empty()) return absl::InvalidArgumentError("path: must not be empty");
  std::error_code ec;
  const auto root = std::filesystem::canonical(options_.load_root, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("--load-root ", options_.load_root, ": ", ec.message()));
  }
  const auto target = std::filesystem::canonical(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("path: ", path, ": ", ec.message()));
  const auto relative = target.lexically_relative(root);
  if (relative.empty() || *relative.begin() == "..") {
    return absl::PermissionDeniedError(
        absl::StrCat("path: ", path, " is outside the allowed root ", root.string()));
  }
  if (store_ == nullptr) {
    return absl::FailedPreconditionError("LoadAdapter needs an adapter store: start with --store");
  }
  // The folder check above reads paths; the store checks again on each opened file, so neither
  // a symlinked file inside the folder nor a folder swapped after the check reads outside root.
  return StoreAndRegister(
      id,
      [&](PutOptions put) {
        put.confine_to = root.string();
        return store_->PutFromDirectory(id, target.string(), put);
      },
      "", path);
}

absl::StatusOr<int> AdapterManager::Unload(const std::string& id, bool keep_in_store) {
  std::lock_guard lock(mutex_);
  if (!sha256_.contains(id)) {
    return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not registered"));
  }
  int in_flight = 0;
  if (std::optional<AdapterInfo> info = engine_->FindAdapter(id)) in_flight = info->in_flight;
  if (absl::Status s = engine_->UnregisterAdapter(id); !s.ok()) return s;
  sha256_.erase(id);
  source_.erase(id);
  if (stored_.erase(id) > 0 && !keep_in_store) {
    if (absl::Status s = store_->Delete(id); !s.ok()) return s;
  }
  return in_flight;
}

absl::StatusOr<ManagedAdapter> AdapterManager::Pin(const std::string& id, bool pinned) {
  {
    std::lock_guard lock(mutex_);
    if (!sha256_.contains(id)) {
      return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not registered"));
    }
  }
  if (absl::Status s = engine_->PinAdapter(id, pinned); !s.ok()) return s;
  return Get(id);
}

absl::StatusOr<ManagedAdapter> AdapterManager::Fuse(
    const std::string& new_id, const std::vector<std::pair<std::string, double>>& sources,
    const FuseOptions& options) {
  if (store_ == nullptr) {
    return absl::FailedPreconditionError(
        "FuseAdapters stores its result and needs an adapter store: start with --store DIR");
  }
  // Held by shared_ptr, so an unload racing with the fusion cannot free a source.
  std::vector<std::shared_ptr<const LoraAdapter>> held;
  {
    std::lock_guard lock(mutex_);
    if (absl::Status s = CheckNew(new_id); !s.ok()) return s;
  }
  for (size_t i = 0; i < sources.size(); ++i) {
    // From the host tier, or read from the store now (on this admin thread).
    absl::StatusOr<std::shared_ptr<const LoraAdapter>> source =
        Has(sources[i].first) ? engine_->GetAdapter(sources[i].first)
                              : absl::NotFoundError("not registered");
    if (!source.ok()) {
      const bool missing = source.status().code() == absl::StatusCode::kNotFound;
      return absl::Status(source.status().code(),
                          absl::StrCat("sources[", i, "].adapter_id: adapter '", sources[i].first,
                                       missing ? "' is not registered"
                                               : "' could not be read: ",
                                       missing ? "" : source.status().message()));
    }
    held.push_back(*std::move(source));
  }
  std::vector<FuseSource> fuse_sources;
  for (size_t i = 0; i < sources.size(); ++i) {
    fuse_sources.push_back({held[i].get(), sources[i].second});
  }
  absl::StatusOr<LoraAdapter> fused = FuseAdapters(new_id, fuse_sources, options);
  if (!fused.ok()) return fused.status();
  if (fused->max_rank > options_.limits.max_rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank: the fused adapter has rank ", fused->max_rank, " (",
        FuseCombinationName(options.combination),
        options.combination == FuseCombination::kCat ? " sums the source ranks" : "",
        "), above this server's maximum LoRA rank ", options_.limits.max_rank,
        "; use an *_svd method with rank <= ", options_.limits.max_rank));
  }
  absl::StatusOr<std::map<std::string, std::string>> files = SerializePeftAdapter(*fused);
  if (!files.ok()) return files.status();
  return StoreAndRegister(
      new_id, [&](const PutOptions& put) { return store_->PutFromFiles(new_id, *files, put); },
      "", "");
}

std::vector<ManagedAdapter> AdapterManager::List() const {
  std::vector<AdapterInfo> infos = engine_->ListAdapters();
  std::sort(infos.begin(), infos.end(),
            [](const AdapterInfo& a, const AdapterInfo& b) { return a.id < b.id; });
  std::lock_guard lock(mutex_);
  std::vector<ManagedAdapter> out;
  for (const AdapterInfo& info : infos) {
    auto it = sha256_.find(info.id);
    if (it == sha256_.end()) continue;  // mid-registration or mid-unload
    auto source = source_.find(info.id);
    out.push_back(FromInfo(info, it->second, stored_.contains(info.id),
                           source == source_.end() ? "" : source->second));
  }
  return out;
}

bool AdapterManager::Has(const std::string& id) const {
  std::lock_guard lock(mutex_);
  return sha256_.contains(id);
}

absl::StatusOr<ManagedAdapter> AdapterManager::Get(const std::string& id) const {
  std::optional<AdapterInfo> info = engine_->FindAdapter(id);
  std::lock_guard lock(mutex_);
  auto sha = sha256_.find(id);
  if (info && sha != sha256_.end()) {
    auto source = source_.find(id);
    return FromInfo(*info, sha->second, stored_.contains(id),
                    source == source_.end() ? "" : source->second);
  }
  return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not registered"));
}

int AdapterManager::registered() const {
  std::lock_guard lock(mutex_);
  return static_cast<int>(sha256_.size());
}

}  // namespace loraserve::server
