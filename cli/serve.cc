// `loraserve serve`: the gRPC server. Parses flags into ServerOptions, starts LoraServer, and
// waits for SIGTERM/SIGINT, then drains in-flight requests within --drain-seconds.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "server/bearer_auth.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "server/log_setup.h"
#include "server/lora_server.h"

namespace loraserve::cli {
namespace {

// The write end of the pipe the signal handler reports to. A handler can reach nothing but
// globals, so this one fd is the exception to "no global mutable state"; it is set once,
// before the handler is installed.
int g_signal_pipe = -1;

void OnStopSignal(int signal_number) {
  const unsigned char byte = static_cast<unsigned char>(signal_number);
  const int saved = errno;
  (void)!write(g_signal_pipe, &byte, 1);
  errno = saved;
}

}  // namespace

void AddServeCommand(CLI::App& app, int* exit_code) {
  struct Flags {
    server::ServerOptions server;
    std::string admin_token_file, inference_token_file;
    std::string merge_mode = "auto";
    double drain_seconds = 30;
    std::string log_format = "text", log_level = "info";
    int64_t max_upload_bytes = 256ll << 20;
    int64_t http_max_body_bytes = 8ll << 20;
  };
  auto flags = std::make_shared<Flags>();
  server::ServerOptions& o = flags->server;
  o.http.listen = "127.0.0.1:8000";
  CLI::App* cmd = app.add_subcommand("serve", "Serve the gRPC inference and admin APIs");
  cmd->add_option("--model", o.model_dir, "Hugging Face model folder (config.json, *.safetensors, "
                                          "tokenizer.json)")
      ->required();
  cmd->add_option("--listen", o.listen, "gRPC address HOST:PORT (port 0 = pick one)")
      ->capture_default_str();
  cmd->add_option("--http-listen", o.http.listen,
                  "OpenAI-compatible HTTP API address HOST:PORT (/v1/*, /health, /metrics); "
                  "empty = off")
      ->capture_default_str();
  cmd->add_option("--served-model-name", o.http.served_model_name,
                  "The base model's name in the OpenAI API's `model` field; default = the --model "
                  "path, as vLLM does");
  cmd->add_option("--api-key", o.http.api_key,
                  "Bearer key the HTTP /v1/* inference routes require (else env "
                  "LORASERVE_API_KEY, else the inference token); /health and /metrics stay open");
  cmd->add_option("--lora-resolver-dir", o.http.lora_resolver_dir,
                  "A request whose `model` is not loaded but is a PEFT LoRA folder here for this "
                  "base model is loaded on the spot (vLLM's filesystem resolver); empty = off");
  cmd->add_flag("--allow-loopback-lora-updates", o.http.allow_loopback_lora_updates,
                "Let /v1/load_lora_adapter and /v1/unload_lora_adapter through without the admin "
                "token when the client is on loopback (a LoRA syncer sidecar in the same pod)");
  cmd->add_option("--http-tls-cert", o.http.tls_cert,
                  "HTTPS for the --http-listen port: certificate chain (PEM); without it the port "
                  "is plain HTTP, for a gateway or TLS sidecar in front");
  cmd->add_option("--http-tls-key", o.http.tls_key, "HTTPS private key (PEM)");
  cmd->add_option("--http-tls-client-ca", o.http.tls_client_ca,
                  "CA bundle (PEM) for mutual TLS on the HTTP port: clients must present a "
                  "certificate it signed");
  cmd->add_option("--http-threads", o.http.threads,
                  "HTTP connections served at once (each streaming request holds one)")
      ->capture_default_str();
  cmd->add_option("--http-max-body-bytes", flags->http_max_body_bytes,
                  "Largest HTTP request body; larger ones get 413")
      ->capture_default_str();
  cmd->add_flag("--vllm-metric-names", o.vllm_metric_names,
                "Also export the queue, KV and LoRA gauges under vLLM's names (vllm:num_requests_"
                "waiting, ...), for Gateway API endpoint pickers without a loraserve engine "
                "config (before GAIE v1.5, or Pods labelled engine-type: vllm)");
  cmd->add_option("--metrics-listen", o.metrics_listen,
                  "Separate Prometheus /metrics HTTP address HOST:PORT (the --http-listen port serves "
                  "/metrics too); empty = off")
      ->capture_default_str();
  cmd->add_option("--store", o.store_dir,
                  "Adapter store folder (uploads are kept here, crash-safe); its adapters are "
                  "registered at start. Empty = no uploads");
  cmd->add_flag("--verify-store-on-start", o.verify_store_on_start,
                "Re-hash every stored adapter file at start (default: each is verified when "
                "first read)");
  AddBackendOptions(cmd, &o.backend);
  cmd->add_option("--cpu-threads", o.engine.cpu_threads,
                  "OpenMP threads per forward pass: 0 = every core other processes leave free "
                  "(re-measured every 0.5 s), N = always N")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  cmd->add_option("--host-cache-bytes", o.engine.host_cache_bytes,
                  "Byte budget of parsed adapters in host memory (LRU; stored adapters beyond "
                  "it are read again on demand); 0 = unlimited")
      ->capture_default_str();
  cmd->add_option("--adapter-dir", o.adapter_dir,
                  "Folder whose every subfolder is a PEFT adapter registered at start (id = "
                  "subfolder name; not copied into the store)");
  cmd->add_option("--load-root", o.adapters.load_root,
                  "LoadAdapter may only read folders under this one; empty = LoadAdapter off");
  cmd->add_option("--admin-token", o.admin_token,
                  "Bearer token of the admin API (else env LORASERVE_ADMIN_TOKEN, else "
                  "--admin-token-file); without one the admin API is disabled");
  cmd->add_option("--admin-token-file", flags->admin_token_file,
                  "File whose first line is the admin token");
  cmd->add_option("--inference-token", o.inference_token,
                  "Bearer token of the inference API (else env LORASERVE_INFERENCE_TOKEN, else "
                  "--inference-token-file); none = open");
  cmd->add_option("--inference-token-file", flags->inference_token_file,
                  "File whose first line is the inference token");
  cmd->add_option("--tls-cert", o.tls_cert, "Server certificate chain (PEM); enables TLS");
  cmd->add_option("--tls-key", o.tls_key, "Server private key (PEM)");
  cmd->add_option("--tls-client-ca", o.tls_client_ca,
                  "CA bundle (PEM) for mutual TLS: clients must present a certificate it signed");
  cmd->add_option("--admin-threads", o.admin_threads,
                  "Threads for slow admin work (uploads, loads, unloads, fusion), off the gRPC "
                  "callback threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--max-message-bytes", o.max_message_bytes,
                  "Largest gRPC message received or sent")
      ->capture_default_str();
  cmd->add_option("--max-metadata-bytes", o.max_metadata_bytes,
                  "Largest gRPC request metadata (headers) of one call")
      ->capture_default_str();
  cmd->add_option("--max-upload-bytes", flags->max_upload_bytes,
                  "Largest adapter upload (all files together)")
      ->capture_default_str();
  cmd->add_option("--max-lora-rank", o.adapters.limits.max_rank,
                  "Adapters with a larger rank are rejected")
      ->capture_default_str();
  cmd->add_option("--pool-bytes", o.engine.pool_bytes,
                  "Bytes of the unified pool shared by KV blocks and adapter pages")
      ->capture_default_str();
  cmd->add_option("--pool-pages", o.engine.pool_pages, "Pool size in pages; 0 = from --pool-bytes")
      ->capture_default_str();
  cmd->add_option("--kv-block-size", o.engine.kv_block_size, "Tokens per KV block")
      ->capture_default_str();
  cmd->add_option("--max-batch-tokens", o.engine.max_batch_tokens,
                  "Token budget of one engine step (prefill chunks + decodes)")
      ->capture_default_str();
  cmd->add_option("--max-running", o.engine.max_running, "Most requests in the running batch")
      ->capture_default_str();
  cmd->add_option("--max-waiting", o.engine.max_waiting,
                  "Most queued requests; more are RESOURCE_EXHAUSTED")
      ->capture_default_str();
  cmd->add_option("--max-lora", o.engine.max_adapters_resident,
                  "Most adapters resident in the adapter pool at once")
      ->capture_default_str();
  cmd->add_option("--merge-mode", flags->merge_mode,
                  "auto: merge single-adapter traffic into the base weights; never: do not")
      ->check(CLI::IsMember({"auto", "never"}))
      ->capture_default_str();
  AddAdapterDtypeOption(cmd, &o.engine.adapter_storage);
  cmd->add_option("--merge-window-seconds", o.engine.merge_window_seconds,
                  "Single-adapter traffic this long before merging (auto mode)")
      ->capture_default_str();
  cmd->add_option("--default-max-tokens", o.default_max_tokens,
                  "max_tokens of requests that leave it 0")
      ->capture_default_str();
  cmd->add_option("--drain-seconds", flags->drain_seconds,
                  "On SIGTERM/SIGINT, time in-flight requests get to finish")
      ->capture_default_str();
  cmd->add_option("--log-format", flags->log_format, "text or json (one object per line)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd->add_option("--log-level", flags->log_level, "trace, debug, info, warn, error")
      ->capture_default_str();

  cmd->callback([flags, exit_code] {
    auto fail = [&](const absl::Status& s) {
      spdlog::error("{}", std::string(s.message()));
      *exit_code = 1;
    };
    if (absl::Status s = server::SetupLogging(flags->log_format, flags->log_level); !s.ok()) {
      std::cerr << "error: " << s.message() << "\n";
      *exit_code = 2;
      return;
    }
    server::ServerOptions options = flags->server;
    auto admin = server::ResolveToken(options.admin_token, "LORASERVE_ADMIN_TOKEN",
                                      flags->admin_token_file);
    if (!admin.ok()) return fail(admin.status());
    options.admin_token = *admin;
    auto inference = server::ResolveToken(options.inference_token, "LORASERVE_INFERENCE_TOKEN",
                                          flags->inference_token_file);
    if (!inference.ok()) return fail(inference.status());
    options.inference_token = *inference;
    auto api_key = server::ResolveToken(options.http.api_key, "LORASERVE_API_KEY", "");
    if (!api_key.ok()) return fail(api_key.status());
    // One token guards inference on both transports unless the HTTP API has its own key.
    options.http.api_key = api_key->empty() ? options.inference_token : *api_key;
    if (flags->http_max_body_bytes < 1024) {
      return fail(absl::InvalidArgumentError("--http-max-body-bytes: must be at least 1024"));
    }
    options.http.max_body_bytes = static_cast<size_t>(flags->http_max_body_bytes);
    if (options.admin_token.empty()) {
      spdlog::warn("no admin token: the admin API answers PERMISSION_DENIED");
    }
    options.adapters.max_upload_bytes = static_cast<size_t>(flags->max_upload_bytes);
    options.engine.merge_mode = flags->merge_mode == "never" ? MergeMode::kNever : MergeMode::kAuto;

    // Every thread started from here inherits the blocked mask, so SIGTERM never interrupts a
    // worker. Threads that exist already (OpenBLAS starts its pool when the library loads) do
    // not block it, and a blocked signal is delivered to one of them: without a handler its
    // default action killed the process when SIGTERM came during start-up (a pod stopped while
    // its model loads). The handler only writes the signal to a pipe this thread reads.
    int signal_pipe[2];
    if (pipe(signal_pipe) != 0) {
      return fail(absl::InternalError(absl::StrCat("pipe for signals: errno ", errno)));
    }
    g_signal_pipe = signal_pipe[1];
    struct sigaction action {};
    action.sa_handler = OnStopSignal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    auto server = server::LoraServer::Start(options);
    if (!server.ok()) return fail(server.status());
    spdlog::info("listening on port {} (HTTP on port {}, metrics on port {})", (*server)->port(),
                 (*server)->http_port(), (*server)->metrics_port());
    // Unblocked here, a signal runs the handler on this thread or on any other that takes it;
    // either way it arrives on the pipe (one that came during start-up is already there).
    pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
    unsigned char received = 0;
    while (read(signal_pipe[0], &received, 1) != 1 && errno == EINTR) {
    }
    const int signal_number = received;
    spdlog::info("signal {}: draining for up to {} s", signal_number, flags->drain_seconds);
    const bool drained = (*server)->Shutdown(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(flags->drain_seconds)));
    spdlog::info(drained ? "drained: every request finished" : "drain deadline passed: the "
                                                                "remaining requests were cancelled");
  });
}

}  // namespace loraserve::cli
