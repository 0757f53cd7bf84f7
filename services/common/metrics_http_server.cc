// cpp-httplib glue for /metrics: bind first (so a taken port is an error the
// caller sees, not a log line from a thread), then serve on a thread.
#include "services/common/metrics_http_server.h"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include <httplib.h>

#include "absl/strings/str_cat.h"

namespace polar {
namespace {

// Scrapes come every few seconds from one or two Prometheus servers; two
// threads are plenty, where httplib's default is one per core.
constexpr size_t kServerThreads = 2;

constexpr char kIndexPage[] =
    "<html><head><title>Polar metrics</title></head><body>"
    "<h1>Polar</h1><p><a href=\"/metrics\">/metrics</a>: Prometheus text format 0.0.4</p>"
    "</body></html>\n";

// httplib's default also sets SO_REUSEPORT, which would let a second process
// bind the same port and take half the scrapes; SO_REUSEADDR alone still lets
// a restarted service rebind while old connections sit in TIME_WAIT.
void SetSocketOptions(int sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

}  // namespace

MetricsHttpServer::MetricsHttpServer(const MetricsRegistry* registry) : registry_(registry) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

absl::Status MetricsHttpServer::Start(const std::string& host, int port) {
  absl::MutexLock lock(&mu_);
  if (server_ != nullptr) return absl::FailedPreconditionError("metrics server: already started");
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics server: port ", port, " is out of range"));
  }
  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] { return new httplib::ThreadPool(kServerThreads); };
  server->set_socket_options(SetSocketOptions);
  const MetricsRegistry* registry = registry_;
  server->Get("/metrics", [registry](const httplib::Request&, httplib::Response& response) {
    response.set_content(registry->RenderText(), kMetricsContentType);
  });
  server->Get("/", [](const httplib::Request&, httplib::Response& response) {
    response.set_content(kIndexPage, "text/html; charset=utf-8");
  });
  server->set_error_handler([](const httplib::Request& request, httplib::Response& response) {
    if (response.status == 404) {
      response.set_content(absl::StrCat("not found: ", request.path, " (try /metrics)\n"), "text/plain; charset=utf-8");
    }
  });

  errno = 0;
  int bound_port = port;
  bool bound;
  if (port == 0) {
    bound_port = server->bind_to_any_port(host);
    bound = bound_port > 0;
  } else {
    bound = server->bind_to_port(host, port);
  }
  if (!bound) {
    int error = errno;
    return absl::UnavailableError(absl::StrCat("metrics server: cannot listen on ", host, ":", port, ": ",
                                               error != 0 ? std::strerror(error) : "address not usable"));
  }

  // stop() is a no-op until the listen loop has started, so wait for it here:
  // a Stop() right after Start() must not leave the thread serving forever.
  auto listen_returned = std::make_shared<std::atomic<bool>>(false);
  httplib::Server* raw = server.get();
  thread_ = std::thread([raw, listen_returned] {
    raw->listen_after_bind();
    listen_returned->store(true);
  });
  while (!raw->is_running() && !listen_returned->load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (listen_returned->load()) {
    thread_.join();
    return absl::InternalError(absl::StrCat("metrics server: listening on ", host, ":", bound_port, " failed"));
  }
  server_ = std::move(server);
  port_ = bound_port;
  return absl::OkStatus();
}

void MetricsHttpServer::Stop() {
  absl::MutexLock lock(&mu_);
  if (server_ == nullptr) return;
  server_->stop();
  thread_.join();
  server_.reset();
  port_ = 0;
}

int MetricsHttpServer::port() const {
  absl::MutexLock lock(&mu_);
  return port_;
}

}  // namespace polar
