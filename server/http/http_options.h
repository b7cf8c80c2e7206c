// Settings of the OpenAI-compatible HTTP listener (`loraserve serve --http-*` and friends).
#pragma once

#include <cstddef>
#include <string>

namespace loraserve::server::http {

struct HttpOptions {
  // Empty = no HTTP listener (the server library's default; `loraserve serve` defaults to
  // 127.0.0.1:8000); port 0 = pick one.
  std::string listen;
  // The name clients put in `model` for the base model; empty = the --model path, as vLLM does.
  std::string served_model_name;
  // Bearer key for /v1/* inference routes; empty = open. (/health and /metrics are always open.)
  std::string api_key;
  // vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter without the admin token when the
  // peer is on loopback: GAIE's LoRA syncer sidecar calls them from inside the pod with none.
  bool allow_loopback_lora_updates = false;
  // vLLM's filesystem resolver: an unknown `model` naming a PEFT folder here (for this base
  // model) is registered on the spot. Empty = off.
  std::string lora_resolver_dir;
  // PEM files; cert + key serve HTTPS (TLS 1.2+), and a client CA also requires every client to
  // present a certificate it signed. Empty = plain HTTP (behind a gateway or a TLS sidecar).
  std::string tls_cert, tls_key, tls_client_ca;
  int threads = 128;                    // concurrent connections served (each may stream)
  size_t max_body_bytes = 8ull << 20;   // larger bodies get 413
  int read_timeout_seconds = 10;        // a client that stops sending mid-request is dropped
};

}  // namespace loraserve::server::http
