// polar-gateway: serves polar.v1.Gateway (plus gRPC health and reflection)
// in front of a set of polar-workers, and /metrics on a separate port.
//
//   polar-gateway --listen 0.0.0.0:50051 --metrics-listen 0.0.0.0:9090 \
//                 --workers worker-0:50052,worker-1:50052   (or dns:///polar-worker:50052)
//
// SIGTERM / SIGINT drain: health turns NOT_SERVING (load balancers stop
// sending), in-flight requests get --drain-grace-seconds to finish, then
// the server stops.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <vector>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include "services/common/metrics.h"
#include "services/common/metrics_http_server.h"
#include "services/gateway/gateway_service.h"
#include "services/gateway/worker_pool.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "HOST:PORT of the public gRPC API (port 0: any free port)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9090",
          "HOST:PORT of the Prometheus /metrics endpoint; empty: no metrics endpoint");
ABSL_FLAG(std::string, workers, "",
          "Workers: HOST:PORT[,HOST:PORT...] or dns:///NAME:PORT (every A/AAAA record of NAME, "
          "re-resolved every --dns_refresh_seconds; a Kubernetes headless Service)");
ABSL_FLAG(std::string, dns_server, "",
          "With --workers dns:///...: IP:PORT of the DNS server to ask (empty: the system's resolver, "
          "/etc/hosts then /etc/resolv.conf)");
ABSL_FLAG(double, dns_refresh_seconds, 5.0, "With --workers dns:///...: how often the name is resolved again");
ABSL_FLAG(int, max_queue, 256,
          "Requests admitted but not yet started by a worker; beyond it requests fail at once with "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int, batch_window_ms, 0,
          "Batching window in ms: how long the first waiting request may wait for more to share its "
          "worker call (0: dispatch at once with whatever is waiting)");
ABSL_FLAG(int, max_batch, 8, "Most requests per worker call (a WorkerBatch)");
ABSL_FLAG(int, default_max_tokens, 256, "max_tokens for requests that leave it unset");
ABSL_FLAG(int, drain_grace_seconds, 30, "On SIGTERM: how long in-flight requests may take to finish");

namespace polar {
namespace {

bool SplitHostPort(const std::string& address, std::string* host, int* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  *host = address.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  return absl::SimpleAtoi(address.substr(colon + 1), port) && *port >= 0 && *port < 65536;
}

int Run() {
  auto targets = ParseWorkerTargets(absl::GetFlag(FLAGS_workers));
  if (!targets.ok()) {
    fprintf(stderr, "polar-gateway: %s\n", std::string(targets.status().message()).c_str());
    return 2;
  }

  // Block the shutdown signals in every thread; main waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  targets->dns_server = absl::GetFlag(FLAGS_dns_server);
  const double dns_refresh_seconds = absl::GetFlag(FLAGS_dns_refresh_seconds);
  if (!(dns_refresh_seconds > 0)) {
    fprintf(stderr, "polar-gateway: --dns_refresh_seconds must be > 0\n");
    return 2;
  }

  MetricsRegistry registry;
  WorkerPool pool(*std::move(targets), absl::Milliseconds(200), absl::Seconds(dns_refresh_seconds));
  GatewayOptions options;
  options.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  options.max_batch = absl::GetFlag(FLAGS_max_batch);
  options.batch_window_ms = absl::GetFlag(FLAGS_batch_window_ms);
  if (options.max_batch < 1 || options.batch_window_ms < 0 || options.max_queue < 0) {
    fprintf(stderr, "polar-gateway: --max_batch must be >= 1, --batch_window_ms and --max_queue >= 0\n");
    return 2;
  }
  options.instance_id = absl::StrFormat("gw-%016x", std::random_device{}() * 0x9E3779B97F4A7C15ull ^
                                                        static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())));
  GatewayService service(&pool, &registry, options);

  MetricsHttpServer metrics_server(&registry);
  const std::string metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!metrics_listen.empty()) {
    std::string host;
    int port = 0;
    if (!SplitHostPort(metrics_listen, &host, &port)) {
      fprintf(stderr, "polar-gateway: --metrics_listen: \"%s\" is not HOST:PORT\n", metrics_listen.c_str());
      return 2;
    }
    if (auto status = metrics_server.Start(host, port); !status.ok()) {
      fprintf(stderr, "polar-gateway: metrics: %s\n", std::string(status.message()).c_str());
      return 1;
    }
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    fprintf(stderr, "polar-gateway: cannot listen on %s\n", absl::GetFlag(FLAGS_listen).c_str());
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  pool.Start();

  // Health follows worker readiness until draining.
  absl::Notification draining;
  std::thread health_thread([&] {
    do {
      health->SetServingStatus(pool.num_ready() > 0);
    } while (!draining.WaitForNotificationWithTimeout(absl::Milliseconds(500)));
  });

  // One line on stdout for scripts and tests (port 0 picks a free port).
  const std::string listen = absl::GetFlag(FLAGS_listen);
  printf("polar-gateway listening grpc=%s:%d metrics=%s:%d\n", listen.substr(0, listen.rfind(':')).c_str(),
         bound_port, metrics_listen.substr(0, metrics_listen.rfind(':')).c_str(), metrics_server.port());
  fflush(stdout);

  int signal = 0;
  sigwait(&signals, &signal);
  printf("polar-gateway: signal %d, draining\n", signal);
  fflush(stdout);
  draining.Notify();
  health_thread.join();
  health->SetServingStatus(false);
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_drain_grace_seconds))));
  server->Wait();
  pool.Stop();
  metrics_server.Stop();
  return 0;
}

}  // namespace
}  // namespace polar

int main(int argc, char** argv) {
  // Accept --metrics-listen as well as --metrics_listen (absl flags spell
  // names with underscores; the documented command lines use dashes).
  std::vector<std::string> args(argv, argv + argc);
  std::vector<char*> arg_ptrs;
  for (std::string& arg : args) {
    if (arg.rfind("--", 0) == 0) {
      const size_t name_end = std::min(arg.find('='), arg.size());
      for (size_t i = 2; i < name_end; ++i) {
        if (arg[i] == '-') arg[i] = '_';
      }
    }
    arg_ptrs.push_back(arg.data());
  }
  argc = static_cast<int>(arg_ptrs.size());
  argv = arg_ptrs.data();
  absl::SetProgramUsageMessage(
      "polar-gateway --listen HOST:PORT --metrics_listen HOST:PORT --workers HOST:PORT,...|dns:///NAME:PORT "
      "[--max_queue N] [--batch_window_ms W] [--max_batch N]\n"
      "Serves polar.v1.Gateway (plus grpc.health.v1 and reflection) in front of polar-workers.\n"
      "Flag names may be spelled with dashes or underscores (--max-queue = --max_queue).");
  // --help lists this binary's flags (absl's default looks for a source file
  // named after the binary).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "services/gateway/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  absl::ParseCommandLine(argc, argv);
  return polar::Run();
}
