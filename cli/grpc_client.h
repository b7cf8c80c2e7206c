// Client-side plumbing shared by the CLI commands that talk to a running server: address,
// token and TLS flags, channel creation, per-call metadata and status printing.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

namespace loraserve::cli {

struct ClientFlags {
  std::string server;
  std::string token;      // sent as "authorization: Bearer <token>"
  std::string token_env;  // environment variable read when --token is empty
  std::string tls_ca;     // PEM roots; set (or --tls) for TLS
  std::string tls_cert, tls_key;  // client certificate for mutual TLS
  bool tls = false;
  double timeout_seconds = 0;  // 0 = no deadline
};

// Adds --token, --tls, --tls-ca, --tls-cert, --tls-key, --timeout (and --server unless
// `server_option` is false: the caller adds its own).
void AddClientFlags(CLI::App* cmd, ClientFlags* flags, bool server_option = true);
std::shared_ptr<grpc::Channel> MakeChannel(const ClientFlags& flags);
void PrepareContext(const ClientFlags& flags, grpc::ClientContext* context);
// "NOT_FOUND: adapter 'x' is not registered"
std::string StatusText(const grpc::Status& status);

}  // namespace loraserve::cli
