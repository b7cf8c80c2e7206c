#include "server/http/lora_routes.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <variant>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_store.h"
#include "server/http/lora_request.h"

namespace loraserve::server::http {
namespace {

HttpReply VllmError(int status, const std::string& type, const std::string& message) {
  HttpError error{status, message, type, ""};
  return ErrorReply(error);
}

}  // namespace

LoraRoutes::LoraRoutes(std::string resolver_dir, std::vector<std::string> base_names)
    : resolver_dir_(std::move(resolver_dir)), base_names_(std::move(base_names)) {}

std::shared_ptr<std::mutex> LoraRoutes::NameLock(const std::string& name) {
  std::lock_guard lock(locks_mutex_);
  for (auto it = name_locks_.begin(); it != name_locks_.end();) {
    it = it->second.expired() ? name_locks_.erase(it) : std::next(it);
  }
  std::shared_ptr<std::mutex> held = name_locks_[name].lock();
  if (!held) {
    held = std::make_shared<std::mutex>();
    name_locks_[name] = held;
  }
  return held;
}

HttpReply LoraRoutes::Load(AdapterManager& adapters, const std::string& body) {
  std::variant<LoadLoraBody, HttpError> decoded = DecodeLoadLoraBody(body);
  if (const HttpError* error = std::get_if<HttpError>(&decoded)) return ErrorReply(*error);
  const auto& [name, path, in_place] = std::get<LoadLoraBody>(decoded);
  std::shared_ptr<std::mutex> name_lock = NameLock(name);
  std::lock_guard hold(*name_lock);
  if (adapters.Has(name)) {
    if (!in_place) {
      return VllmError(400, "InvalidUserInput",
                       absl::StrCat("The lora adapter '", name,
                                    "' has already been loaded. If you want to load the adapter in "
                                    "place, set 'load_inplace' to True."));
    }
    // In place: the new files replace the old registration under the same name. Requests
    // already running keep the old weights (the engine holds them) and finish.
    if (auto unloaded = adapters.Unload(name, /*keep_in_store=*/false); !unloaded.ok()) {
      return ErrorReply(FromStatus(unloaded.status()));
    }
  }
  auto loaded = adapters.LoadFromPath(name, path);
  if (!loaded.ok()) {
    const absl::Status& s = loaded.status();
    if (s.code() == absl::StatusCode::kNotFound) {
      return VllmError(404, "NotFoundError",
                       absl::StrCat("Loading lora ", name, " failed: No adapter found for ", path));
    }
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      return VllmError(400, "InvalidUserInput",
                       absl::StrCat("The lora adapter '", name, "' has already been loaded."));
    }
    HttpError e = FromStatus(s);
    e.message = absl::StrCat("Loading lora ", name, " failed: ", s.message());
    return ErrorReply(e);
  }
  return TextReply(200, absl::StrCat("Success: LoRA adapter '", name, "' added successfully."));
}

HttpReply LoraRoutes::Unload(AdapterManager& adapters, const std::string& body) {
  std::variant<std::string, HttpError> decoded = DecodeUnloadLoraBody(body);
  if (const HttpError* error = std::get_if<HttpError>(&decoded)) return ErrorReply(*error);
  const std::string& name = std::get<std::string>(decoded);
  std::shared_ptr<std::mutex> name_lock = NameLock(name);
  std::lock_guard hold(*name_lock);
  auto unloaded = adapters.Unload(name, /*keep_in_store=*/false);
  if (!unloaded.ok()) {
    if (unloaded.status().code() == absl::StatusCode::kNotFound) {
      return VllmError(404, "NotFoundError",
                       absl::StrCat("The lora adapter '", name, "' cannot be found."));
    }
    return ErrorReply(FromStatus(unloaded.status()));
  }
  return TextReply(200, absl::StrCat("Success: LoRA adapter '", name, "' removed successfully."));
}

absl::Status LoraRoutes::Resolve(AdapterManager& adapters, const std::string& model) {
  if (adapters.Has(model)) return absl::OkStatus();
  auto not_found = [&] {
    return absl::NotFoundError(absl::StrCat("model: The model `", model, "` does not exist."));
  };
  if (resolver_dir_.empty() || !ValidateAdapterId(model).ok()) return not_found();
  const std::filesystem::path folder = std::filesystem::path(resolver_dir_) / model;
  std::ifstream config_file(folder / "adapter_config.json");
  if (!config_file) return not_found();
  const std::string config((std::istreambuf_iterator<char>(config_file)),
                           std::istreambuf_iterator<char>());
  if (!IsResolvableLoraConfig(config, base_names_)) return not_found();
  std::shared_ptr<std::mutex> name_lock = NameLock(model);
  std::lock_guard hold(*name_lock);
  if (adapters.Has(model)) return absl::OkStatus();  // a concurrent request resolved it
  auto registered = adapters.RegisterFolder(model, folder.string());
  if (registered.ok() || registered.status().code() == absl::StatusCode::kAlreadyExists) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("model: LoRA adapter ", model,
                                                 " was found but could not be loaded: ",
                                                 registered.status().message()));
}

}  // namespace loraserve::server::http
