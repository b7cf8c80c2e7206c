#include "server/http/http_error.h"

#include <nlohmann/json.hpp>

namespace loraserve::server::http {
namespace {

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;  // the client went away; nobody reads this
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

bool IsFieldChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '[' || c == ']';
}

// "max_tokens: must be >= 1" -> "max_tokens"; messages that do not start with a field -> "".
std::string LeadingField(const std::string& message) {
  const size_t colon = message.find(": ");
  if (colon == std::string::npos || colon == 0 || colon > 64) return "";
  for (size_t i = 0; i < colon; ++i) {
    if (!IsFieldChar(message[i])) return "";
  }
  if (!((message[0] >= 'a' && message[0] <= 'z') || message[0] == '_')) return "";
  return message.substr(0, colon);
}

}  // namespace

const char* ErrorType(int status) {
  switch (status) {
    case 400:
    case 413:
      return "BadRequestError";
    case 401:
      return "AuthenticationError";
    case 403:
      return "PermissionDeniedError";
    case 404:
      return "NotFoundError";
    case 409:
      return "ConflictError";
    case 429:
      return "RateLimitError";
    case 501:
      return "NotImplementedError";
    case 503:
      return "ServiceUnavailableError";
    case 504:
      return "TimeoutError";
    default:
      return status >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

HttpError FromStatus(const absl::Status& status) {
  HttpError error;
  error.status = HttpStatusOf(status.code());
  error.message = std::string(status.message());
  error.type = ErrorType(error.status);
  error.param = LeadingField(error.message);
  return error;
}

HttpError BadRequest(std::string message, std::string param) {
  return HttpError{400, std::move(message), ErrorType(400), std::move(param)};
}

HttpError NotFound(std::string message, std::string param) {
  return HttpError{404, std::move(message), ErrorType(404), std::move(param)};
}

std::string ErrorJson(const HttpError& error) {
  nlohmann::json body = {{"error",
                          {{"message", error.message},
                           {"type", error.type},
                           {"param", error.param.empty() ? nlohmann::json(nullptr)
                                                         : nlohmann::json(error.param)},
                           {"code", error.status}}}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace loraserve::server::http
