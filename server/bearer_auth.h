// Bearer-token checks for the admin and (optionally) inference services: the token comes from
// a flag, an environment variable or a file, and is compared in constant time against the
// `authorization: Bearer <token>` metadata of each call.
#pragma once

#include <string>

#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loraserve::server {

// The first non-empty of: `flag_value`, the environment variable `env_name`, the first line
// of `file` (trailing whitespace stripped). Empty when none is set. An unreadable file is an
// error naming it.
absl::StatusOr<std::string> ResolveToken(const std::string& flag_value, const char* env_name,
                                         const std::string& file);

class BearerAuth {
 public:
  // `token` empty: every call passes unless `required`, in which case every call is
  // PERMISSION_DENIED with `disabled_hint` (e.g. which flag enables the API).
  BearerAuth(std::string token, bool required, std::string disabled_hint);

  // OK, UNAUTHENTICATED (missing or wrong token) or PERMISSION_DENIED (API disabled).
  absl::Status Check(const grpc::ServerContextBase& context) const;
  // The same check on a raw header value (tests and HTTP endpoints).
  absl::Status CheckHeader(const std::string* authorization) const;

 private:
  const std::string token_;
  const bool required_;
  const std::string disabled_hint_;
};

// Constant-time equality: the time depends only on the lengths.
bool ConstantTimeEquals(const std::string& a, const std::string& b);

}  // namespace loraserve::server
