#include "server/bearer_auth.h"

#include <openssl/crypto.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace loraserve::server {

absl::StatusOr<std::string> ResolveToken(const std::string& flag_value, const char* env_name,
                                         const std::string& file) {
  if (!flag_value.empty()) return flag_value;
  if (env_name != nullptr) {
    if (const char* env = std::getenv(env_name); env != nullptr && *env != '\0') return env;
  }
  if (file.empty()) return std::string();
  std::ifstream in(file);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("token file ", file, " cannot be read"));
  }
  std::string line;
  std::getline(in, line);
  std::string token(absl::StripAsciiWhitespace(line));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token file ", file, " is empty"));
  }
  return token;
}

BearerAuth::BearerAuth(std::string token, bool required, std::string disabled_hint)
    : token_(std::move(token)), required_(required), disabled_hint_(std::move(disabled_hint)) {}

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::Status BearerAuth::CheckHeader(const std::string* authorization) const {
  if (token_.empty()) {
    if (!required_) return absl::OkStatus();
    return absl::PermissionDeniedError(disabled_hint_);
  }
  if (authorization == nullptr) {
    return absl::UnauthenticatedError(
        "missing bearer token: send metadata 'authorization: Bearer <token>'");
  }
  constexpr absl::string_view kPrefix = "Bearer ";
  if (!absl::StartsWithIgnoreCase(*authorization, kPrefix) ||
      !ConstantTimeEquals(authorization->substr(kPrefix.size()), token_)) {
    return absl::UnauthenticatedError("wrong bearer token");
  }
  return absl::OkStatus();
}

absl::Status BearerAuth::Check(const grpc::ServerContextBase& context) const {
  if (token_.empty()) return CheckHeader(nullptr);
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return CheckHeader(nullptr);
  const std::string value(it->second.data(), it->second.size());
  return CheckHeader(&value);
}

}  // namespace loraserve::server
