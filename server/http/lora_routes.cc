#include "server/http/lora_routes.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_store.h"

namespace loraserve::server::http {
namespace {

using nlohmann::json;

HttpReply VllmError(int status, const std::string& type, const std::string& message) {
  HttpError error{status, message, type, ""};
  return ErrorReply(error);
}

// The JSON object of a vLLM request body, or the 400 vLLM gives a body that fails validation.
std::optional<json> ParseObject(const std::string& body, HttpReply* error) {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    *error = VllmError(400, "Bad Request", "the body must be a JSON object");
    return std::nullopt;
  }
  return parsed;
}

std::string StringField(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && it->is_string() ? it->get<std::string>() : "";
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
  HttpReply error;
  auto request = ParseObject(body, &error);
  if (!request) return error;
  for (const char* key : {"lora_name", "lora_path"}) {
    auto it = request->find(key);
    if (it != request->end() && !it->is_null() && !it->is_string()) {
      return VllmError(400, "Bad Request", absl::StrCat(key, ": must be a string"));
    }
  }
  const std::string name = StringField(*request, "lora_name");
  const std::string path = StringField(*request, "lora_path");
  if (name.empty() || path.empty()) {
    return VllmError(400, "InvalidUserInput", "Both 'lora_name' and 'lora_path' must be provided.");
  }
  bool in_place = false;
  if (auto it = request->find("load_inplace"); it != request->end() && !it->is_null()) {
    if (!it->is_boolean()) return VllmError(400, "Bad Request", "load_inplace: must be a boolean");
    in_place = it->get<bool>();
  }
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
  HttpReply error;
  auto request = ParseObject(body, &error);
  if (!request) return error;
  if (auto it = request->find("lora_name");
      it != request->end() && !it->is_null() && !it->is_string()) {
    return VllmError(400, "Bad Request", "lora_name: must be a string");
  }
  const std::string name = StringField(*request, "lora_name");
  if (name.empty()) {
    return VllmError(400, "InvalidUserInput",
                     "'lora_name' needs to be provided to unload a LoRA adapter.");
  }
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
  json config = json::parse(config_file, nullptr, /*allow_exceptions=*/false);
  // Like vLLM's filesystem resolver: a LoRA for this base model, else not ours to load.
  if (config.is_discarded() || !config.is_object() ||
      config.value("peft_type", std::string()) != "LORA") {
    return not_found();
  }
  const std::string base = config.value("base_model_name_or_path", std::string());
  if (std::find(base_names_.begin(), base_names_.end(), base) == base_names_.end()) {
    return not_found();
  }
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
