#include "cli/grpc_client.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "server/grpc_status.h"

namespace loraserve::cli {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

void AddClientFlags(CLI::App* cmd, ClientFlags* flags, bool server_option) {
  if (server_option) {
    cmd->add_option("--server", flags->server, "Server address HOST:PORT")
        ->default_val("127.0.0.1:50051")
        ->capture_default_str();
  }
  cmd->add_option("--token", flags->token,
                  "Bearer token (default: env " + flags->token_env + ")");
  cmd->add_flag("--tls", flags->tls, "Use TLS with the system roots");
  cmd->add_option("--tls-ca", flags->tls_ca, "PEM roots to verify the server (implies --tls)");
  cmd->add_option("--tls-cert", flags->tls_cert, "Client certificate (PEM) for mutual TLS");
  cmd->add_option("--tls-key", flags->tls_key, "Client key (PEM) for mutual TLS");
  cmd->add_option("--timeout", flags->timeout_seconds, "Call deadline in seconds; 0 = none")
      ->capture_default_str();
}

std::shared_ptr<grpc::Channel> MakeChannel(const ClientFlags& flags) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (flags.tls || !flags.tls_ca.empty() || !flags.tls_cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!flags.tls_ca.empty()) ssl.pem_root_certs = ReadAll(flags.tls_ca);
    if (!flags.tls_cert.empty()) ssl.pem_cert_chain = ReadAll(flags.tls_cert);
    if (!flags.tls_key.empty()) ssl.pem_private_key = ReadAll(flags.tls_key);
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(flags.server, credentials, args);
}

void PrepareContext(const ClientFlags& flags, grpc::ClientContext* context) {
  std::string token = flags.token;
  if (token.empty() && !flags.token_env.empty()) {
    if (const char* env = std::getenv(flags.token_env.c_str()); env != nullptr) token = env;
  }
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  if (flags.timeout_seconds > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(
                              static_cast<int64_t>(flags.timeout_seconds * 1000)));
  }
}

std::string StatusText(const grpc::Status& status) {
  return std::string(server::GrpcCodeName(status.error_code())) + ": " + status.error_message();
}

}  // namespace loraserve::cli
