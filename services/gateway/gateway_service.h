// GatewayService: polar.v1.Gateway on gRPC's callback API. A request is
// validated and tokenized, admitted into a bounded queue (full: an immediate
// RESOURCE_EXHAUSTED), batched onto the least-loaded ready worker, and the worker's token events are relayed back as UTF-8-safe
// text deltas with stop sequences applied (see RunGeneration in the .cc).
// Requests reach workers in batches (BatchDispatcher).
//
// Threads: gRPC's callback threads only validate and hand over; each
// generation runs its blocking worker stream on a thread of its own, which
// the admission queue bounds. The client cancelling (or disconnecting)
// cancels the worker call; the client's deadline becomes the worker
// request's timeout. A worker that fails before the request started (or
// refuses the batch) is skipped and the request goes to another one.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "polar/v1/gateway.grpc.pb.h"
#include "services/common/metrics.h"
#include "services/gateway/request_validation.h"
#include "services/gateway/worker_pool.h"

namespace polar {

struct GatewayOptions {
  // Requests admitted but not yet started by a worker; beyond: RESOURCE_EXHAUSTED.
  int max_queue = 256;
  // Most requests per worker call, and how long the first one of a batch
  // may wait for more (0: dispatch at once with whatever is waiting).
  int max_batch = 8;
  int batch_window_ms = 0;
  // max_tokens when a request leaves it unset.
  int default_max_tokens = 256;
  // Prefix of worker request ids, unique per gateway process.
  std::string instance_id;
  std::string version = "0.1.0";
};

// The gateway's metric families (registered once on a registry).
struct GatewayMetrics {
  CounterFamily* requests = nullptr;  // {code, finish_reason}
  Histogram* queue_seconds = nullptr;
  Histogram* ttft_seconds = nullptr;
  Histogram* inter_token_seconds = nullptr;
  Histogram* e2e_seconds = nullptr;
  Counter* worker_calls = nullptr;   // Worker.Generate calls (batches) sent
  Histogram* batch_size = nullptr;   // requests per worker call
};

class GatewayService final : public v1::Gateway::CallbackService {
 public:
  // `pool` and `registry` must outlive the service.
  GatewayService(WorkerPool* pool, MetricsRegistry* registry, GatewayOptions options);
  ~GatewayService() override;

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context, const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

  // Requests admitted and not yet started on a worker.
  int queue_size() const;

  // Internals shared with the reactors in the .cc.
  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
};

// The limits the gateway enforces for `model` (exposed for tests and GetModelInfo).
RequestLimits LimitsForModel(const ServedModel& model, int default_max_tokens);

}  // namespace polar
