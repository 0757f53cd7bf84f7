// polar.v1.Worker over a Scheduler: the gRPC side of polar-worker.
//
// gRPC threads only validate, Submit to the Scheduler and relay events; the
// Scheduler's engine thread delivers each sequence's events through
// SequenceRequest::on_event, which appends to its stream's pending updates
// under a short lock and, when no write is in flight, starts one (StartWrite
// never blocks). A slow client therefore never stalls the engine: while one
// write is outstanding, further steps' updates accumulate per request in the
// stream and go out merged in the next message (token ids stay in order),
// so the queue is bounded by the batch, not by the client's speed.
//
// Request ids: the gateway's string ids map to the scheduler's numeric ids
// for as long as the request is in flight (until its final event), so Cancel
// can find a request by name and a duplicate in-flight id is refused.
//
// WatchLoad: each watcher has a small thread of its own that writes a report
// per interval (the callback API has no timers); it ends when the call is
// cancelled or the server shuts down.
//
// Cancellation: Cancel RPC by id; a cancelled or broken Generate call
// (OnCancel, failed write) cancels its requests still in flight. Either way
// the scheduler frees the KV blocks before the final event.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "engine/runtime/model_runner.h"
#include "engine/runtime/scheduler.h"
#include "engine/tokenizer/tokenizer.h"
#include "polar/v1/worker.grpc.pb.h"

namespace polar {

struct WorkerServiceOptions {
  std::string instance_id;
  std::string device = "cpu";
  std::string version;
  int32_t max_batch_tokens = 0;
  int32_t max_running = 0;
  // Most sequences waiting; a batch that would exceed it is refused with
  // RESOURCE_EXHAUSTED.
  int32_t max_waiting = 1024;
};

class WorkerService final : public v1::Worker::CallbackService {
 public:
  // All must outlive the service; `tokenizer` may be null (a model without
  // one: GetTokenizer answers NOT_FOUND).
  WorkerService(const ModelRunner* runner, Scheduler* scheduler, const Tokenizer* tokenizer,
                WorkerServiceOptions options);

  // Runs one real forward step (a 1-token prompt, 1 generated token) through
  // the scheduler and waits for it; on success the worker becomes ready.
  absl::Status WarmUp();
  // Refuses new batches from now on (UNAVAILABLE); in-flight ones continue.
  void BeginDrain();
  bool ready() const { return ready_.load() && !draining_.load(); }
  // Requests whose final event has not been delivered yet (exact, unlike the
  // scheduler's Load snapshot): draining waits for this to reach 0.
  int64_t in_flight() const;

  // The model's facts (also used by tests).
  v1::WorkerInfo Info() const;
  v1::LoadReport Report() const;

  grpc::ServerWriteReactor<v1::WorkerEvent>* Generate(grpc::CallbackServerContext* context,
                                                      const v1::WorkerBatch* batch) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context, const v1::CancelRequest* request,
                                   v1::CancelResponse* response) override;
  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context, const v1::GetLoadRequest* request,
                                    v1::LoadReport* response) override;
  grpc::ServerWriteReactor<v1::LoadReport>* WatchLoad(grpc::CallbackServerContext* context,
                                                      const v1::WatchLoadRequest* request) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetWorkerInfoRequest* request,
                                         v1::WorkerInfo* response) override;
  grpc::ServerUnaryReactor* GetTokenizer(grpc::CallbackServerContext* context,
                                         const v1::GetTokenizerRequest* request,
                                         v1::Tokenizer* response) override;

 private:
  class GenerateReactor;
  friend class GenerateReactor;
  class WatchLoadReactor;

  // Claims `request_id` for a new in-flight sequence: its engine id, or
  // ALREADY_EXISTS.
  absl::StatusOr<uint64_t> Claim(const std::string& request_id);
  void Release(const std::string& request_id);

  const ModelRunner* runner_;
  Scheduler* scheduler_;
  const Tokenizer* tokenizer_;
  WorkerServiceOptions options_;
  v1::Tokenizer tokenizer_proto_;  // built once; empty source when none
  std::string tokenizer_digest_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};

  mutable absl::Mutex mu_;
  uint64_t next_engine_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<std::string, uint64_t> in_flight_ ABSL_GUARDED_BY(mu_);
};

// The engine's TokenizerData as the protocol's Tokenizer message.
v1::Tokenizer TokenizerToProto(const TokenizerData& data);

}  // namespace polar
