// vLLM's error types and texts for these bodies (vllm/entrypoints/openai/serving_models.py).
#include "server/http/lora_request.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace loraserve::server::http {
namespace {

using nlohmann::json;

HttpError VllmError(const std::string& type, std::string message) {
  return HttpError{400, std::move(message), type, ""};
}

// The JSON object of a request body, or null.
json ParseObject(std::string_view body) {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  return parsed.is_discarded() || !parsed.is_object() ? json() : parsed;
}

std::string StringField(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

std::variant<LoadLoraBody, HttpError> DecodeLoadLoraBody(std::string_view body) {
  const json request = ParseObject(body);
  if (request.is_null()) return VllmError("Bad Request", "the body must be a JSON object");
  for (const char* key : {"lora_name", "lora_path"}) {
    auto it = request.find(key);
    if (it != request.end() && !it->is_null() && !it->is_string()) {
      return VllmError("Bad Request", absl::StrCat(key, ": must be a string"));
    }
  }
  LoadLoraBody out{StringField(request, "lora_name"), StringField(request, "lora_path")};
  if (out.name.empty() || out.path.empty()) {
    return VllmError("InvalidUserInput", "Both 'lora_name' and 'lora_path' must be provided.");
  }
  if (auto it = request.find("load_inplace"); it != request.end() && !it->is_null()) {
    if (!it->is_boolean()) return VllmError("Bad Request", "load_inplace: must be a boolean");
    out.in_place = it->get<bool>();
  }
  return out;
}

std::variant<std::string, HttpError> DecodeUnloadLoraBody(std::string_view body) {
  const json request = ParseObject(body);
  if (request.is_null()) return VllmError("Bad Request", "the body must be a JSON object");
  if (auto it = request.find("lora_name");
      it != request.end() && !it->is_null() && !it->is_string()) {
    return VllmError("Bad Request", "lora_name: must be a string");
  }
  std::string name = StringField(request, "lora_name");
  if (name.empty()) {
    return VllmError("InvalidUserInput",
                     "'lora_name' needs to be provided to unload a LoRA adapter.");
  }
  return name;
}

bool IsResolvableLoraConfig(std::string_view config_json,
                            const std::vector<std::string>& base_names) {
  const json config = ParseObject(config_json);
  if (config.is_null() || StringField(config, "peft_type") != "LORA") return false;
  const std::string base = StringField(config, "base_model_name_or_path");
  return std::find(base_names.begin(), base_names.end(), base) != base_names.end();
}

}  // namespace loraserve::server::http
