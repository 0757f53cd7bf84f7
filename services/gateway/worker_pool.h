// WorkerPool: the gateway's view of its polar-workers. It keeps one gRPC
// channel per worker address (a static list, or the A/AAAA records of a DNS
// name re-resolved periodically, e.g. a Kubernetes headless Service), polls
// each worker's load (GetLoad) on a background thread, and fetches the model
// facts and tokenizer once from the first ready worker, so the gateway needs
// no model files. Pick() returns the least-loaded ready worker; the load it
// compares is the worker's last report plus the requests this gateway sent
// it since, so a burst between two polls still spreads over the workers.
#pragma once

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/tokenizer/tokenizer.h"
#include "polar/v1/worker.grpc.pb.h"

namespace polar {

// One worker process (one address).
struct WorkerHandle {
  std::string address;  // host:port
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Worker::Stub> stub;
  // Requests this gateway dispatched that the worker has not reported in a
  // load report yet (reset on every report; see Pick()).
  std::atomic<int> dispatched_since_report{0};

  mutable absl::Mutex mu;
  bool ready ABSL_GUARDED_BY(mu) = false;
  v1::LoadReport load ABSL_GUARDED_BY(mu);
};

// The served model as learned from a worker.
struct ServedModel {
  v1::WorkerInfo info;
  std::unique_ptr<const Tokenizer> tokenizer;
};

// `--workers`: "host:port,host:port" or "dns:///name:port".
struct WorkerTargets {
  std::vector<std::string> static_addresses;  // when not DNS
  std::string dns_host;                       // when DNS
  std::string dns_port;
  std::string dns_server;  // "" (the system's resolver) or IP:PORT of the DNS server to ask
};
absl::StatusOr<WorkerTargets> ParseWorkerTargets(const std::string& spec);

// The tokenizer proto as the engine's TokenizerData (field for field).
absl::StatusOr<TokenizerData> TokenizerDataFromProto(const v1::Tokenizer& proto);

class WorkerPool {
 public:
  explicit WorkerPool(WorkerTargets targets, absl::Duration poll_interval = absl::Milliseconds(200),
                      absl::Duration dns_interval = absl::Seconds(5));
  ~WorkerPool();  // stops the poll thread
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Resolves, polls once and starts the poll thread.
  void Start();
  void Stop();

  // Null until a ready worker gave its model facts and tokenizer.
  std::shared_ptr<const ServedModel> model() const;
  // Waits up to `timeout` for model() to be set.
  std::shared_ptr<const ServedModel> WaitForModel(absl::Duration timeout) const;

  // The least-loaded ready worker whose address is not in `exclude`, or null.
  std::shared_ptr<WorkerHandle> Pick(const std::set<std::string>& exclude) const;

  int num_workers() const;
  int num_ready() const;

 private:
  void PollLoop();
  void Resolve();
  void PollOnce();
  void FetchModel(WorkerHandle& worker);

  const WorkerTargets targets_;
  const absl::Duration poll_interval_;
  const absl::Duration dns_interval_;

  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<WorkerHandle>> workers_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const ServedModel> model_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_resolve_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::thread thread_;
};

}  // namespace polar
