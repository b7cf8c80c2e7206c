// Errors on the OpenAI HTTP API: an HTTP status and the JSON body OpenAI and vLLM send,
// {"error": {"message", "type", "param", "code"}}, which the official client maps to its
// exception classes (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429
// RateLimitError, >= 500 InternalServerError).
#pragma once

#include <string>

#include "absl/status/status.h"

namespace loraserve::server::http {

struct HttpError {
  int status = 500;
  std::string message;
  std::string type;   // vLLM's names: BadRequestError, NotFoundError, ...
  std::string param;  // the request field at fault; empty = null
};

// The HTTP form of a status from the generation call or the adapter manager. The parameter is
// the field the message starts with ("max_tokens: must be ..."), when it starts with one.
HttpError FromStatus(const absl::Status& status);
HttpError BadRequest(std::string message, std::string param = "");
HttpError NotFound(std::string message, std::string param = "");

// The OpenAI error body; `code` is the HTTP status, as vLLM writes it.
std::string ErrorJson(const HttpError& error);

// The type name vLLM uses for an HTTP status.
const char* ErrorType(int status);

}  // namespace loraserve::server::http
