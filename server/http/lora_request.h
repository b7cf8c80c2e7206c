// The bodies of vLLM's runtime LoRA routes and the adapter_config.json check of its filesystem
// resolver, decoded without the server: lora_routes.cc acts on the results, and the fuzzer
// (tests/fuzz/lora_request_fuzz.cc) drives these alone.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "server/http/http_error.h"

namespace loraserve::server::http {

// POST /v1/load_lora_adapter {lora_name, lora_path, load_inplace?}.
struct LoadLoraBody {
  std::string name;
  std::string path;
  bool in_place = false;
};

// The request, or the 400 vLLM answers a body that fails its validation.
std::variant<LoadLoraBody, HttpError> DecodeLoadLoraBody(std::string_view body);
// POST /v1/unload_lora_adapter {lora_name}: the adapter name, or the 400.
std::variant<std::string, HttpError> DecodeUnloadLoraBody(std::string_view body);

// Like vLLM's filesystem resolver: whether `config_json` (an adapter_config.json) is a LoRA for
// this base model, whose base_model_name_or_path is one of `base_names`. Anything else,
// malformed JSON included, is not ours to load.
bool IsResolvableLoraConfig(std::string_view config_json,
                            const std::vector<std::string>& base_names);

}  // namespace loraserve::server::http
