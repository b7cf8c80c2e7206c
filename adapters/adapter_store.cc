// Crash safety rests on three POSIX facts: rename() of a directory within one file system is
// atomic; fsync on a file makes its data durable; fsync on a directory makes its entries (the
// rename) durable. A published entry root/<id> therefore only ever appears with all files and
// the manifest already on disk; anything else a crash can leave lives under .tmp/ or .trash/,
// which the start-up scan removes.
#include "adapters/adapter_store.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "adapters/lora_adapter.h"
#include "adapters/sha256.h"
#include "nlohmann/json.hpp"

namespace loraserve {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr char kTmpDir[] = ".tmp";
constexpr char kTrashDir[] = ".trash";
constexpr char kQuarantineDir[] = ".quarantine";
constexpr char kLockFile[] = ".lock";
constexpr char kReadmeFile[] = "README.md";
constexpr char kManifestFormat[] = "loraserve-adapter-store/1";
constexpr size_t kCopyChunk = 1 << 20;

bool IsAcceptedFile(std::string_view name) {
  return name == kAdapterConfigFile || name == kAdapterWeightsFile || name == kReadmeFile;
}

absl::Status IoError(absl::string_view op, const std::string& path) {
  const int error = errno;
  return absl::ErrnoToStatus(error, absl::StrCat("adapter store: ", op, " ", path));
}

// Closes on scope exit; the fd may be released early by Close() to check its result.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

absl::Status FsyncPath(const std::string& path, bool directory) {
  Fd fd(::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC));
  if (fd.get() < 0) return IoError("open", path);
  if (::fsync(fd.get()) != 0) return IoError("fsync", path);
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, const char* data, size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError("write", path);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Publishes `from` as `to`, failing with EEXIST instead of replacing an existing entry.
int RenameNoReplace(const std::string& from, const std::string& to) {
#ifdef __linux__
  return ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE);
#else
  if (::access(to.c_str(), F_OK) == 0) {
    errno = EEXIST;
    return -1;
  }
  return ::rename(from.c_str(), to.c_str());
#endif
}

json ManifestJson(const StoredAdapter& entry) {
  json files = json::array();
  for (const StoredFile& file : entry.files) {
    files.push_back({{"name", file.name}, {"size", file.size}, {"sha256", file.sha256}});
  }
  json manifest = {{"format", kManifestFormat},
                   {"adapter_id", entry.id},
                   {"created_unix", entry.created_unix},
                   {"files", files}};
  if (!entry.index_json.empty()) {
    manifest["index"] = json::parse(entry.index_json, nullptr, /*allow_exceptions=*/false);
  }
  return manifest;
}

// Checks an entry directory against its manifest; the error says what is wrong.
absl::StatusOr<StoredAdapter> VerifyEntry(const std::string& dir, const std::string& id,
                                          bool verify_hashes) {
  const std::string manifest_path = absl::StrCat(dir, "/", kStoreManifestFile);
  std::string text;
  {
    Fd fd(::open(manifest_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return absl::DataLossError("manifest missing (incomplete write)");
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(fd.get(), buffer, sizeof(buffer))) > 0) text.append(buffer, n);
    if (n < 0) return absl::DataLossError("manifest unreadable");
  }
  const json manifest = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object() ||
      manifest.value("format", "") != kManifestFormat || !manifest.contains("files") ||
      !manifest["files"].is_array()) {
    return absl::DataLossError("manifest is not valid JSON of the expected format");
  }
  StoredAdapter entry;
  entry.id = id;
  entry.path = dir;
  if (manifest.value("adapter_id", "") != id) {
    return absl::DataLossError(
        absl::StrCat("manifest names adapter '", manifest.value("adapter_id", ""), "'"));
  }
  entry.created_unix = manifest.value("created_unix", int64_t{0});
  if (manifest.contains("index") && manifest["index"].is_object()) {
    entry.index_json = manifest["index"].dump();
  }
  std::set<std::string> listed;
  for (const json& file : manifest["files"]) {
    if (!file.is_object() || !file.contains("name") || !file["name"].is_string() ||
        !file.contains("size") || !file["size"].is_number_unsigned() || !file.contains("sha256") ||
        !file["sha256"].is_string()) {
      return absl::DataLossError("manifest has a malformed file record");
    }
    StoredFile record{file["name"].get<std::string>(), file["size"].get<uint64_t>(),
                      file["sha256"].get<std::string>()};
    if (!IsAcceptedFile(record.name) || !listed.insert(record.name).second) {
      return absl::DataLossError(
          absl::StrCat("manifest lists unexpected file '", record.name, "'"));
    }
    const std::string path = absl::StrCat(dir, "/", record.name);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return absl::DataLossError(absl::StrCat("file '", record.name, "' is missing"));
    }
    if (static_cast<uint64_t>(st.st_size) != record.size) {
      return absl::DataLossError(absl::StrCat("file '", record.name, "' has ", st.st_size,
                                              " bytes, manifest says ", record.size));
    }
    if (verify_hashes) {
      absl::StatusOr<std::string> digest = Sha256File(path);
      if (!digest.ok()) return absl::DataLossError(digest.status().message());
      if (*digest != record.sha256) {
        return absl::DataLossError(absl::StrCat("file '", record.name, "' has sha256 ", *digest,
                                                ", manifest says ", record.sha256));
      }
    }
    if (record.name == kAdapterWeightsFile) entry.adapter_sha256 = record.sha256;
    entry.files.push_back(std::move(record));
  }
  for (const char* required : {kAdapterConfigFile, kAdapterWeightsFile}) {
    if (!listed.contains(required)) {
      return absl::DataLossError(absl::StrCat("manifest does not list '", required, "'"));
    }
  }
  std::error_code ec;
  for (const fs::directory_entry& file : fs::directory_iterator(dir, ec)) {
    const std::string name = file.path().filename().string();
    if (name != kStoreManifestFile && !listed.contains(name)) {
      return absl::DataLossError(absl::StrCat("unexpected file '", name, "' in the entry"));
    }
  }
  if (ec) return absl::DataLossError(absl::StrCat("cannot list the entry: ", ec.message()));
  std::sort(entry.files.begin(), entry.files.end(),
            [](const StoredFile& x, const StoredFile& y) { return x.name < y.name; });
  return entry;
}

}  // namespace

// One file to stage: `bytes`, or else the open file `fd` (named `path` in errors).
struct AdapterStore::Source {
  std::string name;
  std::string path;
  const std::string* bytes = nullptr;
  int fd = -1;  // owned by the caller of Put
};

absl::Status ValidateAdapterId(std::string_view id) {
  static const std::regex kId("[A-Za-z0-9][A-Za-z0-9._-]{0,127}");
  if (!std::regex_match(id.begin(), id.end(), kId)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adapter_id \"", absl::CHexEscape(std::string(id.substr(0, 200))),
        "\" is invalid: use 1-128 characters from [A-Za-z0-9._-], starting with a letter or "
        "digit"));
  }
  return absl::OkStatus();
}

AdapterStore::AdapterStore(std::string root, AdapterStoreOptions options, int lock_fd)
    : root_(std::move(root)), options_(std::move(options)), lock_fd_(lock_fd) {}

AdapterStore::~AdapterStore() { ::close(lock_fd_); }  // closing releases the flock

absl::StatusOr<std::unique_ptr<AdapterStore>> AdapterStore::Open(const std::string& root,
                                                                 AdapterStoreOptions options) {
  std::error_code ec;
  for (const char* sub : {"", kTmpDir, kTrashDir, kQuarantineDir}) {
    const std::string dir = *sub == '\0' ? root : absl::StrCat(root, "/", sub);
    fs::create_directories(dir, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("adapter store: cannot create ", dir, ": ", ec.message()));
    }
  }
  const std::string lock_path = absl::StrCat(root, "/", kLockFile);
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return IoError("open", lock_path);
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(lock_fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "adapter store ", root, " is in use by another process (", lock_path, " is locked)"));
    }
    errno = error;
    return IoError("flock", lock_path);
  }
  std::unique_ptr<AdapterStore> store(new AdapterStore(root, std::move(options), lock_fd));
  if (absl::Status s = store->Scan(); !s.ok()) return s;
  return store;
}

void AdapterStore::Log(std::string_view line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::cerr << line << "\n";
  }
}

std::string AdapterStore::UniqueName(std::string_view id) {
  return absl::StrCat(std::string(id), ".", ::getpid(), ".", next_unique_.fetch_add(1));
}

void AdapterStore::Quarantine(const std::string& name, absl::string_view reason) {
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const std::string from = absl::StrCat(root_, "/", name);
  std::string to = absl::StrCat(root_, "/", kQuarantineDir, "/", name, ".", now);
  for (int n = 1; ::access(to.c_str(), F_OK) == 0; ++n) {
    to = absl::StrCat(root_, "/", kQuarantineDir, "/", name, ".", now, ".", n);
  }
  if (::rename(from.c_str(), to.c_str()) != 0) {
    Log(absl::StrCat("adapter store: cannot quarantine '", name, "' (", reason,
                     "): rename failed: ", std::strerror(errno)));
    return;
  }
  Log(absl::StrCat("adapter store: quarantined '", name, "' (", reason, ") to ", to));
}

absl::Status AdapterStore::Scan() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::error_code ec;
  // Leftovers of puts and deletes interrupted by a crash: never visible, safe to drop.
  for (const char* sub : {kTmpDir, kTrashDir}) {
    const std::string dir = absl::StrCat(root_, "/", sub);
    for (const fs::directory_entry& leftover : fs::directory_iterator(dir, ec)) {
      Log(absl::StrCat("adapter store: removing interrupted ",
                       std::string_view(sub) == kTmpDir ? "put" : "delete", " leftover ",
                       leftover.path().string()));
      fs::remove_all(leftover.path(), ec);
    }
  }
  std::vector<std::string> names;
  for (const fs::directory_entry& item : fs::directory_iterator(root_, ec)) {
    const std::string name = item.path().filename().string();
    if (!name.empty() && name[0] != '.') names.push_back(name);
  }
  if (ec)
    return absl::InternalError(
        absl::StrCat("adapter store: cannot list ", root_, ": ", ec.message()));
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(root_, "/", name);
    if (!ValidateAdapterId(name).ok() || !fs::is_directory(path, ec)) {
      Quarantine(name, "not an adapter entry");
      continue;
    }
    absl::StatusOr<StoredAdapter> entry = VerifyEntry(path, name, options_.verify_hashes_on_open);
    if (!entry.ok()) {
      Quarantine(name, entry.status().message());
      continue;
    }
    entries_.emplace(name, *std::move(entry));
  }
  return FsyncPath(root_, /*directory=*/true);
}

absl::StatusOr<StoredAdapter> AdapterStore::PutFromDirectory(std::string_view id,
                                                             const std::string& source_dir,
                                                             const PutOptions& options) {
  std::vector<std::unique_ptr<Fd>> opened;
  std::vector<Source> sources;
  for (const char* name : {kAdapterConfigFile, kAdapterWeightsFile, kReadmeFile}) {
    const std::string path = absl::StrCat(source_dir, "/", name);
    // O_NONBLOCK: a FIFO planted under the name must not hang the open; it is refused below.
    auto fd = std::make_unique<Fd>(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (fd->get() < 0) {
      if (errno != ENOENT) return IoError("open", path);
      if (std::string_view(name) == kReadmeFile) continue;
      return absl::InvalidArgumentError(
          absl::StrCat(source_dir, ": missing ", name, " (expected a PEFT adapter folder)"));
    }
    struct stat st;
    if (::fstat(fd->get(), &st) != 0) return IoError("stat", path);
    if (!S_ISREG(st.st_mode)) {
      if (std::string_view(name) == kReadmeFile) continue;
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
    }
    if (!options.confine_to.empty()) {
      // What was opened, not what the path said a moment ago: /proc names the file itself.
      std::error_code ec;
      const fs::path real = fs::read_symlink(absl::StrCat("/proc/self/fd/", fd->get()), ec);
      const fs::path relative = real.lexically_relative(options.confine_to);
      if (ec || relative.empty() || *relative.begin() == "..") {
        return absl::PermissionDeniedError(
            absl::StrCat("path: ", path, " resolves outside the allowed root ", options.confine_to,
                         " (a symlink may only point inside it)"));
      }
    }
    sources.push_back({name, path, nullptr, fd->get()});
    opened.push_back(std::move(fd));
  }
  return Put(id, sources, options);
}

absl::StatusOr<StoredAdapter> AdapterStore::PutFromFiles(
    std::string_view id, const std::map<std::string, std::string>& files,
    const PutOptions& options) {
  std::vector<Source> sources;
  for (const auto& [name, bytes] : files) {
    if (!IsAcceptedFile(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "upload file \"", absl::CHexEscape(name.substr(0, 200)), "\" is not accepted (only ",
          kAdapterConfigFile, ", ", kAdapterWeightsFile, " and ", kReadmeFile, ")"));
    }
    sources.push_back({name, "", &bytes});
  }
  for (const char* required : {kAdapterConfigFile, kAdapterWeightsFile}) {
    if (!files.contains(required)) {
      return absl::InvalidArgumentError(absl::StrCat("upload is missing ", required));
    }
  }
  return Put(id, sources, options);
}

absl::StatusOr<StoredAdapter> AdapterStore::Put(std::string_view id_view,
                                                const std::vector<Source>& sources,
                                                const PutOptions& options) {
  const std::string id(id_view);
  if (absl::Status s = ValidateAdapterId(id); !s.ok()) return s;
  if (options.expected_sha256.has_value() && !IsSha256Hex(*options.expected_sha256)) {
    return absl::InvalidArgumentError(
        "sha256 must be 64 hex digits (the sha256 of adapter_model.safetensors)");
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.contains(id) || staging_.contains(id)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "adapter '", id, "' already exists; delete it first or choose another adapter_id"));
    }
    staging_.insert(id);
  }
  const std::string staged = absl::StrCat(root_, "/", kTmpDir, "/", UniqueName(id));
  absl::StatusOr<StoredAdapter> entry = Stage(id, staged, sources, options);

  std::lock_guard<std::mutex> lock(mutex_);
  staging_.erase(staging_.find(id));
  if (entry.ok()) {
    const std::string target = absl::StrCat(root_, "/", id);
    if (RenameNoReplace(staged, target) != 0) {
      entry = errno == EEXIST ? absl::AlreadyExistsError(absl::StrCat("adapter store: ", target,
                                                                      " already exists on disk"))
                              : IoError("rename", staged);
    } else {
      entry->path = target;
      // The rename is durable once root is synced. .tmp is not synced: should a crash bring
      // the staged name back there, the start-up scan removes it (root's entry wins).
      absl::Status synced = FsyncPath(root_, /*directory=*/true);
      if (!synced.ok()) {
        Log(absl::StrCat("adapter store: ", synced.message()));
      }
      entries_.emplace(id, *entry);
      return entry;
    }
  }
  std::error_code ec;
  fs::remove_all(staged, ec);
  return entry;
}

absl::StatusOr<StoredAdapter> AdapterStore::Stage(const std::string& id, const std::string& staged,
                                                  const std::vector<Source>& sources,
                                                  const PutOptions& options) {
  if (::mkdir(staged.c_str(), 0755) != 0) return IoError("mkdir", staged);
  StoredAdapter entry;
  entry.id = id;
  entry.path = staged;
  std::vector<char> buffer;
  for (const Source& source : sources) {
    const std::string path = absl::StrCat(staged, "/", source.name);
    Fd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (out.get() < 0) return IoError("create", path);
    Sha256 hasher;
    uint64_t size = 0;
    if (source.bytes != nullptr) {
      if (absl::Status s = WriteAll(out.get(), source.bytes->data(), source.bytes->size(), path);
          !s.ok()) {
        return s;
      }
      hasher.Update(*source.bytes);
      size = source.bytes->size();
    } else {
      buffer.resize(kCopyChunk);
      for (;;) {
        const ssize_t n = ::read(source.fd, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return IoError("read", source.path);
        if (n == 0) break;
        if (absl::Status s = WriteAll(out.get(), buffer.data(), n, path); !s.ok()) return s;
        hasher.Update(std::string_view(buffer.data(), static_cast<size_t>(n)));
        size += static_cast<uint64_t>(n);
      }
    }
    if (::fsync(out.get()) != 0) return IoError("fsync", path);
    if (out.Close() != 0) return IoError("close", path);
    entry.files.push_back({source.name, size, hasher.HexDigest()});
    if (source.name == kAdapterWeightsFile) entry.adapter_sha256 = entry.files.back().sha256;
  }
  std::sort(entry.files.begin(), entry.files.end(),
            [](const StoredFile& x, const StoredFile& y) { return x.name < y.name; });
  if (options.expected_sha256.has_value() &&
      absl::AsciiStrToLower(*options.expected_sha256) != entry.adapter_sha256) {
    return absl::InvalidArgumentError(
        absl::StrCat("sha256 mismatch for ", kAdapterWeightsFile, ": expected ",
                     *options.expected_sha256, ", received content hashes to ",
                     entry.adapter_sha256, " (the upload is truncated or corrupt; retry it)"));
  }
  if (options.validator) {
    if (absl::Status s = options.validator(staged); !s.ok()) return s;
  }
  if (options.index) {
    entry.index_json = options.index();
    const json index = json::parse(entry.index_json, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object()) {
      return absl::InternalError("adapter store: the manifest index is not a JSON object");
    }
  }
  entry.created_unix = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  // The manifest is written last: an entry without one was never completely staged.
  const std::string manifest_path = absl::StrCat(staged, "/", kStoreManifestFile);
  const std::string manifest = ManifestJson(entry).dump(2);
  Fd out(::open(manifest_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (out.get() < 0) return IoError("create", manifest_path);
  if (absl::Status s = WriteAll(out.get(), manifest.data(), manifest.size(), manifest_path);
      !s.ok()) {
    return s;
  }
  if (::fsync(out.get()) != 0) return IoError("fsync", manifest_path);
  if (out.Close() != 0) return IoError("close", manifest_path);
  if (absl::Status s = FsyncPath(staged, /*directory=*/true); !s.ok()) return s;
  return entry;
}

absl::StatusOr<StoredAdapter> AdapterStore::Get(std::string_view id_view) const {
  const std::string id(id_view);
  if (absl::Status s = ValidateAdapterId(id); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not in the store"));
  }
  return it->second;
}

absl::Status AdapterStore::Delete(std::string_view id_view) {
  const std::string id(id_view);
  if (absl::Status s = ValidateAdapterId(id); !s.ok()) return s;
  const std::string trash = absl::StrCat(root_, "/", kTrashDir, "/", UniqueName(id));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not in the store"));
    }
    // One rename retracts the entry; removing the files afterwards can be interrupted safely.
    if (::rename(it->second.path.c_str(), trash.c_str()) != 0) {
      return IoError("rename", it->second.path);
    }
    entries_.erase(it);
    if (absl::Status s = FsyncPath(root_, /*directory=*/true); !s.ok()) {
      Log(absl::StrCat("adapter store: ", s.message()));
    }
  }
  std::error_code ec;
  fs::remove_all(trash, ec);
  if (ec) Log(absl::StrCat("adapter store: cannot remove ", trash, ": ", ec.message()));
  return absl::OkStatus();
}

std::vector<StoredAdapter> AdapterStore::List() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<StoredAdapter> out;
  out.reserve(entries_.size());
  for (const auto& [id, entry] : entries_) out.push_back(entry);
  return out;
}

}  // namespace loraserve
