// vLLM's runtime LoRA endpoints, with vLLM's bodies and status codes:
//   POST /v1/load_lora_adapter   {lora_name, lora_path, load_inplace?}  -> 200 plain text
//   POST /v1/unload_lora_adapter {lora_name}                            -> 200 plain text
// and vLLM's filesystem resolver: an unknown `model` that names a PEFT LoRA folder for this base
// model under --lora-resolver-dir is registered on first use (one load per name at a time).
// Authentication is the caller's (the admin token, or the loopback opt-in).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/adapter_manager.h"
#include "server/http/http_reply.h"

namespace loraserve::server::http {

class LoraRoutes {
 public:
  // `base_names`: what an adapter's base_model_name_or_path may say for this base model (the
  // served name, the --model path and its folder name).
  LoraRoutes(std::string resolver_dir, std::vector<std::string> base_names);

  HttpReply Load(AdapterManager& adapters, const std::string& body);
  HttpReply Unload(AdapterManager& adapters, const std::string& body);

  // OK when `model` is registered, now or after resolving it. NOT_FOUND when there is no such
  // folder (or it is for another base model); INVALID_ARGUMENT when it is there but invalid.
  absl::Status Resolve(AdapterManager& adapters, const std::string& model);
  bool resolver_enabled() const { return !resolver_dir_.empty(); }

 private:
  std::shared_ptr<std::mutex> NameLock(const std::string& name);

  const std::string resolver_dir_;
  const std::vector<std::string> base_names_;
  std::mutex locks_mutex_;  // guards name_locks_
  std::map<std::string, std::weak_ptr<std::mutex>> name_locks_;
};

}  // namespace loraserve::server::http
