// polar-worker: serves one model over polar.v1.Worker (gRPC), with
// grpc.health.v1 (SERVING only after a real warm-up step, NOT_SERVING while
// draining), server reflection, and Prometheus metrics on a separate port.
//
// SIGTERM/SIGINT: health NOT_SERVING, new batches refused (UNAVAILABLE),
// in-flight sequences get up to --drain-grace-seconds to finish, the rest are
// cancelled, then the process exits 0. The signals are blocked in every
// thread and taken synchronously by the main thread (sigwait), so no work
// happens in a signal handler.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/common/metrics.h"
#include "services/common/metrics_http_server.h"
#include "services/worker/worker_metrics.h"
#include "services/worker/worker_service.h"
#include "tools/polar/args.h"
#include "engine/tokenizer/tokenizer_loading.h"
#include "tools/polar/loaded_model.h"

namespace polar {
namespace {

constexpr char kUsage[] = R"(usage: polar-worker --model PATH --listen HOST:PORT --metrics-listen HOST:PORT [options]

Serves one model over the polar.v1.Worker gRPC API.

  --model PATH               GGUF file or Hugging Face directory (required)
  --listen HOST:PORT         gRPC address (required; port 0: any free port)
  --metrics-listen HOST:PORT Prometheus /metrics address (required; port 0: any)
  --device cpu               compute device (only cpu in this build)
  --threads N                engine threads (default: all cores)
  --kv-cache-bytes B         KV cache size in bytes (default: 1 GiB)
  --max-batch-tokens N       token budget of one engine step (default: 512)
  --max-num-seqs N           most sequences running at once (default: 256)
  --max-waiting N            most sequences waiting before RESOURCE_EXHAUSTED (default: 1024)
  --drain-grace-seconds S    on SIGTERM, time in-flight work gets to finish (default: 30)
  --routers PATH             Polar Sparsity head routers from `polar calibrate` (default or empty: none, dense)
  --mlp-routers PATH         MLP routers from `polar calibrate --mlp` (OPT only; default or empty: none, dense);
                             a decode step whose sequences all ask for a density below 1 runs sparse MLPs
  --default-density D        density of requests asking for the default, in (0, 1]; 0 or unset:
                             the routers' calibrated density (1 without routers)
  --per-head-metrics         also export polar_attention_head_selected_total{layer,head}
                             (copies each step's head selection to the host)
  --help                     this text

Once listening it prints one line to stdout:
  polar-worker listening grpc=HOST:PORT metrics=HOST:PORT
)";

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address, const char* flag) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " must be HOST:PORT, got \"", address, "\""));
  }
  return std::make_pair(address.substr(0, colon), port);
}

std::string RandomInstanceId() {
  std::random_device random;
  return absl::StrCat(absl::Hex(static_cast<uint64_t>(random()) << 32 | random(), absl::kZeroPad16));
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "polar-worker: %s\n", status.ToString().c_str());
  return 1;
}

int Run(int argc, char** argv) {
  // Before any thread exists, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<cli::Args> args = cli::Args::Parse(
      std::vector<std::string>(argv + 1, argv + argc),
      {"model", "listen", "metrics-listen", "device", "threads", "kv-cache-bytes", "max-batch-tokens",
       "max-num-seqs", "max-waiting", "drain-grace-seconds", "routers", "mlp-routers", "default-density"},
      {"help", "per-head-metrics"});
  if (!args.ok()) {
    std::fprintf(stderr, "polar-worker: %s\n%s", std::string(args.status().message()).c_str(), kUsage);
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  for (const char* required : {"model", "listen", "metrics-listen"}) {
    if (!args->Has(required)) {
      std::fprintf(stderr, "polar-worker: --%s is required\n%s", required, kUsage);
      return 2;
    }
  }
  if (args->Get("device", "cpu") != "cpu") {
    return Fail(absl::InvalidArgumentError("--device: only cpu is supported by this build"));
  }
  absl::StatusOr<std::pair<std::string, int>> metrics_address =
      SplitHostPort(args->Get("metrics-listen"), "metrics-listen");
  if (!metrics_address.ok()) return Fail(metrics_address.status());
  absl::StatusOr<int64_t> max_num_seqs = args->GetInt("max-num-seqs", 256);
  absl::StatusOr<int64_t> max_waiting = args->GetInt("max-waiting", 1024);
  absl::StatusOr<double> grace = args->GetDouble("drain-grace-seconds", 30.0);
  if (!max_num_seqs.ok()) return Fail(max_num_seqs.status());
  if (!max_waiting.ok()) return Fail(max_waiting.status());
  if (!grace.ok()) return Fail(grace.status());

  // /metrics answers from the start, before the model loads (which can take
  // minutes): a scrape that fails means the process is gone, not loading
  // (deploy/prometheus/rules: PolarWorkerDown). The model's families join the
  // registry once they exist.
  MetricsRegistry registry;
  absl::StatusOr<std::unique_ptr<WorkerMetrics>> metrics = WorkerMetrics::Create(&registry, POLAR_VERSION);
  if (!metrics.ok()) return Fail(metrics.status());
  MetricsHttpServer metrics_server(&registry);
  if (absl::Status started = metrics_server.Start(metrics_address->first, metrics_address->second); !started.ok()) {
    return Fail(started);
  }

  absl::StatusOr<cli::LoadedModel> model = cli::LoadModel(*args, /*with_tokenizer=*/false);
  if (!model.ok()) return Fail(model.status());
  ModelRunner& runner = *model->runner;
  // A model without a tokenizer is served by ids alone: GetTokenizer answers NOT_FOUND.
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(runner.checkpoint());
  if (!tokenizer.ok() && !absl::IsNotFound(tokenizer.status())) return Fail(tokenizer.status());
  const Tokenizer* tok = tokenizer.ok() ? tokenizer->get() : nullptr;
  if (tok == nullptr) {
    std::fprintf(stderr, "polar-worker: serving without a tokenizer (%s)\n",
                 std::string(tokenizer.status().message()).c_str());
  }

  // The step histograms' hook goes into the scheduler's options.
  SchedulerOptions scheduler_options;
  scheduler_options.max_batch_tokens = runner.options().max_batch_tokens;
  scheduler_options.max_num_seqs = static_cast<int32_t>(*max_num_seqs);
  scheduler_options.end_of_generation_ids = tok != nullptr ? tok->eos_ids() : runner.config().eos_token_ids;
  scheduler_options.on_step = (*metrics)->StepObserver();
  Scheduler scheduler(runner, scheduler_options);
  if (args->Has("per-head-metrics")) runner.heads().EnablePerHeadCounts();
  absl::Status status =
      (*metrics)->Attach(&scheduler, runner.heads().counters(),
                         runner.mlp() != nullptr ? &runner.mlp()->counters() : nullptr);
  // From here the registry reads the scheduler: whatever path leaves, the
  // scrapes and the pump stop before the scheduler goes away.
  absl::Cleanup stop_metrics = [&] {
    metrics_server.Stop();
    (*metrics)->StopPump();
  };
  if (!status.ok()) return Fail(status);
  scheduler.Start();

  WorkerServiceOptions service_options;
  service_options.instance_id = RandomInstanceId();
  service_options.version = POLAR_VERSION;
  service_options.max_batch_tokens = runner.options().max_batch_tokens;
  service_options.max_running = static_cast<int32_t>(*max_num_seqs);
  service_options.max_waiting = static_cast<int32_t>(*max_waiting);
  WorkerService service(&runner, &scheduler, tok, service_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(args->Get("listen"), grpc::InsecureServerCredentials(), &grpc_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return Fail(absl::UnavailableError(absl::StrCat("cannot listen on ", args->Get("listen"))));
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(false);  // the default is SERVING; not before warm-up
  const std::string listen_host = args->Get("listen").substr(0, args->Get("listen").rfind(':'));
  std::printf("polar-worker listening grpc=%s:%d metrics=%s:%d\n", listen_host.c_str(), grpc_port,
              metrics_address->first.c_str(), metrics_server.port());
  std::fflush(stdout);

  status = service.WarmUp();
  if (!status.ok()) {
    server->Shutdown();
    scheduler.Stop();
    return Fail(status);
  }
  // Counters start after the warm-up: it served no request.
  (*metrics)->DiscardPendingGrowth();
  (*metrics)->StartPump();
  health->SetServingStatus(true);
  std::fprintf(stderr, "polar-worker: ready (instance %s)\n", service_options.instance_id.c_str());

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::fprintf(stderr, "polar-worker: signal %d, draining (grace %.1fs)\n", signal_number, *grace);
  health->SetServingStatus(false);
  service.BeginDrain();
  const absl::Time give_up = absl::Now() + absl::Seconds(*grace);
  while (service.in_flight() > 0 && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(20));
  scheduler.Stop();  // cancels what is left; their final events end the streams
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  std::move(stop_metrics).Invoke();
  std::fprintf(stderr, "polar-worker: stopped\n");
  return 0;
}

}  // namespace
}  // namespace polar

int main(int argc, char** argv) { return polar::Run(argc, argv); }
