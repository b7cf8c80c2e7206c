// A complete (non-streamed) HTTP answer, built without the HTTP library so route logic can be
// tested on its own.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "server/http/http_error.h"

namespace loraserve::server::http {

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

inline HttpReply ErrorReply(const HttpError& error) {
  HttpReply reply;
  reply.status = error.status;
  reply.body = ErrorJson(error);
  // Overload and draining are transient: say when to come back (the openai client honours it).
  if (error.status == 429 || error.status == 503) reply.headers.push_back({"retry-after", "1"});
  return reply;
}

inline HttpReply TextReply(int status, std::string text) {
  HttpReply reply;
  reply.status = status;
  reply.content_type = "text/plain; charset=utf-8";
  reply.body = std::move(text);
  return reply;
}

}  // namespace loraserve::server::http
