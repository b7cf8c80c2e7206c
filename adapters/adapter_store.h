// The on-disk adapter store: one directory per adapter id under a root, written so that a crash
// at any instant leaves each id either wholly present (every file matching its recorded sha256)
// or absent. Writers stage into root/.tmp, fsync, and publish with one atomic rename; deletes
// retract with one rename into root/.trash. The start-up scan clears staging leftovers and
// quarantines entries that do not match their manifest. See docs/adapters.md for the argument.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loraserve {

// Written last into a staged entry; its presence marks the entry complete.
inline constexpr char kStoreManifestFile[] = "loraserve_manifest.json";

// ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$; InvalidArgument naming the field `adapter_id` otherwise.
absl::Status ValidateAdapterId(std::string_view id);

struct StoredFile {
  std::string name;
  uint64_t size = 0;
  std::string sha256;
};

struct StoredAdapter {
  std::string id;
  std::string path;  // the entry directory: pass to LoadPeftAdapter
  int64_t created_unix = 0;
  std::vector<StoredFile> files;  // sorted by name; the manifest itself is not listed
  std::string adapter_sha256;     // of adapter_model.safetensors
  // The "index" object of the manifest as JSON text (what the writer recorded about the adapter
  // so a reader can register it without reading its tensors); empty when there is none.
  std::string index_json;
};

struct AdapterStoreOptions {
  // Re-hash every file at Open. Sizes are always checked; hashing catches bit rot and tampering
  // at the cost of reading every adapter once per start.
  bool verify_hashes_on_open = true;
  // Receives one line per notable start-up or quarantine event; defaults to std::cerr.
  std::function<void(std::string_view)> log;
};

struct PutOptions {
  // Expected sha256 (hex) of adapter_model.safetensors; a mismatch rejects the put.
  std::optional<std::string> expected_sha256;
  // Runs on the fully written staged directory before it is published; a non-OK status aborts
  // the put and leaves the store exactly as it was.
  std::function<absl::Status(const std::string& staged_dir)> validator;
  // Called after the validator succeeds: a JSON object recorded in the manifest as "index" and
  // returned as StoredAdapter::index_json. The manifest is written atomically with the files.
  std::function<std::string()> index;
  // PutFromDirectory only. When set (a canonical folder), every file copied must resolve, with
  // its symlinks, to a path under this folder; PERMISSION_DENIED otherwise. The check is made
  // on the opened file, so a symlink swapped in after a path check cannot redirect the read.
  std::string confine_to;
};

class AdapterStore {
 public:
  // Creates `root` if needed, takes an exclusive lock on it (one process owns a store), and runs
  // the start-up scan. FailedPrecondition when another process holds the store.
  static absl::StatusOr<std::unique_ptr<AdapterStore>> Open(const std::string& root,
                                                            AdapterStoreOptions options = {});
  ~AdapterStore();
  AdapterStore(const AdapterStore&) = delete;
  AdapterStore& operator=(const AdapterStore&) = delete;

  // Copies adapter_config.json, adapter_model.safetensors and README.md (if present) from a
  // PEFT folder; other files there (training state) are not copied. Each must be a regular file
  // (a symlink to one is followed, within options.confine_to when that is set).
  absl::StatusOr<StoredAdapter> PutFromDirectory(std::string_view id, const std::string& source_dir,
                                                 const PutOptions& options = {});
  // An upload: file name -> content. Only the names above are accepted.
  absl::StatusOr<StoredAdapter> PutFromFiles(std::string_view id,
                                             const std::map<std::string, std::string>& files,
                                             const PutOptions& options = {});
  absl::StatusOr<StoredAdapter> Get(std::string_view id) const;
  absl::Status Delete(std::string_view id);
  std::vector<StoredAdapter> List() const;  // sorted by id

  const std::string& root() const { return root_; }

 private:
  struct Source;  // one file to stage: bytes in memory or a path to copy

  AdapterStore(std::string root, AdapterStoreOptions options, int lock_fd);
  absl::Status Scan();
  absl::StatusOr<StoredAdapter> Put(std::string_view id, const std::vector<Source>& sources,
                                    const PutOptions& options);
  absl::StatusOr<StoredAdapter> Stage(const std::string& id, const std::string& staged_dir,
                                      const std::vector<Source>& sources,
                                      const PutOptions& options);
  void Quarantine(const std::string& name, absl::string_view reason);
  std::string UniqueName(std::string_view id);
  void Log(std::string_view line) const;

  const std::string root_;
  const AdapterStoreOptions options_;
  const int lock_fd_;  // flock'd root/.lock, held for the store's lifetime

  // Guards entries_ and staging_, and is held across every rename into or out of root_ so the
  // published directories and entries_ always agree.
  mutable std::mutex mutex_;
  std::map<std::string, StoredAdapter, std::less<>> entries_;
  std::set<std::string, std::less<>> staging_;  // ids with a put in flight
  std::atomic<uint64_t> next_unique_{0};        // staging and trash names
};

}  // namespace loraserve
