// Fuzzes the bodies of vLLM's LoRA routes (POST /v1/load_lora_adapter and
// /v1/unload_lora_adapter) and the resolver's adapter_config.json check, all on the same bytes:
// each is a decoded request or vLLM's 400, and the check is a yes or no.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "server/http/lora_request.h"

namespace http = loraserve::server::http;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  auto load = http::DecodeLoadLoraBody(body);
  if (const auto* error = std::get_if<http::HttpError>(&load); error && error->status != 400) {
    __builtin_trap();
  }
  if (const auto* ok = std::get_if<http::LoadLoraBody>(&load);
      ok && (ok->name.empty() || ok->path.empty())) {
    __builtin_trap();
  }
  auto unload = http::DecodeUnloadLoraBody(body);
  if (const auto* name = std::get_if<std::string>(&unload); name && name->empty()) {
    __builtin_trap();
  }
  static const std::vector<std::string> kBaseNames = {"smollm2", "/models/smollm2",
                                                      "HuggingFaceTB/SmolLM2-135M-Instruct"};
  (void)http::IsResolvableLoraConfig(body, kBaseNames);
  return 0;
}
