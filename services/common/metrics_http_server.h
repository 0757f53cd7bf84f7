// Serves a MetricsRegistry at GET /metrics for Prometheus to scrape, on its own
// small HTTP server (cpp-httplib) and thread, apart from the gRPC port: a scrape
// never waits behind inference traffic, and the metrics port can stay inside
// the cluster while the gRPC port is exposed.
//
// GET /metrics answers the text exposition format 0.0.4; GET / a short index
// page; anything else 404.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "services/common/metrics.h"

namespace httplib {
class Server;
}

namespace polar {

inline constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";

class MetricsHttpServer {
 public:
  // `registry` must outlive the server.
  explicit MetricsHttpServer(const MetricsRegistry* registry);
  ~MetricsHttpServer();  // stops it
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Binds host:port (port 0: the kernel picks a free one, see port()) and
  // serves on a thread of its own. Returns once the server accepts
  // connections. Unavailable when the address cannot be bound (in use, not a
  // local address), FailedPrecondition when already started.
  absl::Status Start(const std::string& host, int port);
  // Stops accepting, finishes the scrapes in flight, joins the thread. Safe to
  // call twice or without Start.
  void Stop();
  // The bound port while serving, else 0.
  int port() const;

 private:
  const MetricsRegistry* registry_;
  mutable absl::Mutex mu_;
  std::unique_ptr<httplib::Server> server_ ABSL_GUARDED_BY(mu_);
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  int port_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace polar
