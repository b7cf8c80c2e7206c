// The HTTP side of the server: GET /metrics (Prometheus text format) on its own listener, so
// scrapes never queue behind gRPC traffic. One thread, owned by the object, started and stopped
// explicitly.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace loraserve::server {

class MetricsHttpServer {
 public:
  // `listen` is HOST:PORT (PORT 0 = pick one). `render` produces the exposition per scrape.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::function<std::string()> render);
  ~MetricsHttpServer();  // stops and joins
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

// "host:port" -> (host, port); IPv6 hosts in brackets ("[::1]:9400").
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address,
                                                          const std::string& flag);

}  // namespace loraserve::server
