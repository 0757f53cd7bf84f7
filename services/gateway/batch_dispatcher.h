// BatchDispatcher: groups admitted requests into WorkerBatches (up to
// --max-batch requests, or whatever arrived within --batch-window-ms of the
// first) and runs each batch as one Worker.Generate call on the least-loaded
// ready worker. The call's events carry every request of the batch; a reader
// thread per call routes each RequestUpdate to its request's RequestChannel,
// from which that request's generation thread consumes. One request leaving
// early (client cancel, stop sequence) is cancelled by id with Worker.Cancel,
// so the rest of its batch runs on.
#pragma once

#include <deque>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "polar/v1/worker.grpc.pb.h"
#include "services/common/metrics.h"
#include "services/gateway/worker_pool.h"

namespace polar {

// One request's side of a worker call: updates in, a blocking Pop out.
class RequestChannel {
 public:
  explicit RequestChannel(v1::WorkerRequest request) : request_(std::move(request)) {}

  const v1::WorkerRequest& request() const { return request_; }

  // Consumer: the next update; false once the channel ended without one
  // (*end says why: the call failed, or the request was cancelled here).
  bool Pop(v1::RequestUpdate* update, absl::Status* end);
  // Consumer: stop the request. Before dispatch it never leaves the gateway;
  // after, the worker gets a Cancel for its id. Pop returns false from now on.
  void Cancel();
  // Address of the worker it was sent to ("" while not dispatched).
  std::string worker_address() const;

  // Dispatcher: the request is going to `worker`; false if already cancelled.
  bool SetWorker(std::shared_ptr<WorkerHandle> worker);
  // Dispatcher: an update from the worker.
  void Push(v1::RequestUpdate update);
  // Dispatcher: no more updates will come; `status` says why.
  void Close(absl::Status status);
  bool cancelled() const;

 private:
  void SendCancel(const std::shared_ptr<WorkerHandle>& worker);

  const v1::WorkerRequest request_;
  mutable absl::Mutex mu_;
  std::deque<v1::RequestUpdate> updates_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // A Cancel may reach the worker before the batch does (and be ignored
  // there): it is sent once more when the first update after it arrives.
  bool cancel_resent_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<WorkerHandle> worker_ ABSL_GUARDED_BY(mu_);
};

class BatchDispatcher {
 public:
  // `pool` must outlive the dispatcher. max_batch >= 1. `calls` and
  // `batch_sizes` (optional) count worker calls and observe their sizes.
  BatchDispatcher(WorkerPool* pool, int max_batch, absl::Duration window, Counter* calls = nullptr,
                  Histogram* batch_sizes = nullptr);
  // Cancels the calls still running and waits for their threads.
  ~BatchDispatcher();
  BatchDispatcher(const BatchDispatcher&) = delete;
  BatchDispatcher& operator=(const BatchDispatcher&) = delete;

  // Queues `channel` for a worker whose address is not in `exclude`. When
  // no worker can take it, the channel is closed with UNAVAILABLE.
  void Submit(std::shared_ptr<RequestChannel> channel, std::set<std::string> exclude);

 private:
  struct Pending {
    std::shared_ptr<RequestChannel> channel;
    std::set<std::string> exclude;
    absl::Time arrival;
  };

  void Loop();
  void RunCall(std::shared_ptr<WorkerHandle> worker, std::vector<std::shared_ptr<RequestChannel>> channels);

  WorkerPool* const pool_;
  const int max_batch_;
  const absl::Duration window_;
  Counter* const calls_counter_;
  Histogram* const batch_sizes_;

  absl::Mutex mu_;
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Worker calls in flight (their contexts, to cancel them on shutdown).
  std::set<grpc::ClientContext*> calls_ ABSL_GUARDED_BY(mu_);
  int call_threads_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace polar
