// See batch_dispatcher.h. Call threads are detached and counted rather than
// joined one by one: a call lives as long as its longest request, and the
// dispatcher only needs to know that none is left when it goes away.
#include "services/gateway/batch_dispatcher.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "services/common/status_mapping.h"

namespace polar {

bool RequestChannel::Pop(v1::RequestUpdate* update, absl::Status* end) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return cancelled_ || closed_ || !updates_.empty(); };
  mu_.Await(absl::Condition(&ready));
  if (cancelled_) {
    *end = absl::CancelledError("the request was cancelled");
    return false;
  }
  if (!updates_.empty()) {
    *update = std::move(updates_.front());
    updates_.pop_front();
    return true;
  }
  *end = end_;
  return false;
}

void RequestChannel::Cancel() {
  std::shared_ptr<WorkerHandle> worker;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return;
    cancelled_ = true;
    worker = worker_;
    if (closed_) worker = nullptr;  // finished already: nothing to cancel
  }
  if (worker != nullptr) SendCancel(worker);
}

std::string RequestChannel::worker_address() const {
  absl::MutexLock lock(&mu_);
  return worker_ == nullptr ? "" : worker_->address;
}

bool RequestChannel::SetWorker(std::shared_ptr<WorkerHandle> worker) {
  absl::MutexLock lock(&mu_);
  if (cancelled_) return false;
  worker_ = std::move(worker);
  return true;
}

void RequestChannel::Push(v1::RequestUpdate update) {
  std::shared_ptr<WorkerHandle> resend;
  {
    absl::MutexLock lock(&mu_);
    const bool final_update = update.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
    if (cancelled_ && !cancel_resent_ && !final_update) {
      cancel_resent_ = true;
      resend = worker_;
    }
    if (final_update) closed_ = true;
    updates_.push_back(std::move(update));
  }
  if (resend != nullptr) SendCancel(resend);
}

void RequestChannel::Close(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (closed_) return;
  closed_ = true;
  end_ = std::move(status);
}

bool RequestChannel::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

void RequestChannel::SendCancel(const std::shared_ptr<WorkerHandle>& worker) {
  struct CancelCall {
    grpc::ClientContext ctx;
    v1::CancelRequest request;
    v1::CancelResponse response;
  };
  auto* call = new CancelCall;
  call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  call->request.add_request_ids(request_.request_id());
  // The callback keeps the worker (and so its stub and channel) alive.
  worker->stub->async()->Cancel(&call->ctx, &call->request, &call->response,
                                [call, worker](grpc::Status) { delete call; });
}

BatchDispatcher::BatchDispatcher(WorkerPool* pool, int max_batch, absl::Duration window, Counter* calls,
                                 Histogram* batch_sizes)
    : pool_(pool),
      max_batch_(std::max(1, max_batch)),
      window_(window),
      calls_counter_(calls),
      batch_sizes_(batch_sizes) {
  thread_ = std::thread([this] { Loop(); });
}

BatchDispatcher::~BatchDispatcher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    for (grpc::ClientContext* ctx : calls_) ctx->TryCancel();
  }
  thread_.join();
  absl::MutexLock lock(&mu_);
  auto no_calls = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return call_threads_ == 0; };
  mu_.Await(absl::Condition(&no_calls));
}

void BatchDispatcher::Submit(std::shared_ptr<RequestChannel> channel, std::set<std::string> exclude) {
  absl::MutexLock lock(&mu_);
  if (stop_) {
    channel->Close(absl::UnavailableError("the gateway is shutting down"));
    return;
  }
  pending_.push_back({std::move(channel), std::move(exclude), absl::Now()});
}

void BatchDispatcher::Loop() {
  absl::MutexLock lock(&mu_);
  while (true) {
    auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !pending_.empty(); };
    mu_.Await(absl::Condition(&has_work));
    if (stop_) {
      for (Pending& p : pending_) p.channel->Close(absl::UnavailableError("the gateway is shutting down"));
      pending_.clear();
      return;
    }
    // The window: wait for a full batch, at most `window_` after the oldest arrival.
    const absl::Time window_end = pending_.front().arrival + window_;
    auto full = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stop_ || static_cast<int>(pending_.size()) >= max_batch_;
    };
    if (absl::Now() < window_end) mu_.AwaitWithDeadline(absl::Condition(&full), window_end);
    if (stop_) continue;

    std::shared_ptr<WorkerHandle> worker = pool_->Pick(pending_.front().exclude);
    if (worker == nullptr) {
      pending_.front().channel->Close(absl::UnavailableError("no worker is ready"));
      pending_.pop_front();
      continue;
    }
    std::vector<std::shared_ptr<RequestChannel>> batch;
    for (auto it = pending_.begin(); it != pending_.end() && static_cast<int>(batch.size()) < max_batch_;) {
      if (it->exclude.count(worker->address) > 0) {
        ++it;  // already failed there: waits for the next batch
        continue;
      }
      if (it->channel->SetWorker(worker)) batch.push_back(it->channel);
      // A cancelled request is dropped here: its consumer has gone already.
      it = pending_.erase(it);
    }
    if (batch.empty()) continue;
    if (calls_counter_ != nullptr) calls_counter_->Increment();
    if (batch_sizes_ != nullptr) batch_sizes_->Observe(static_cast<double>(batch.size()));
    worker->dispatched_since_report.fetch_add(static_cast<int>(batch.size()) - 1, std::memory_order_relaxed);
    ++call_threads_;
    std::thread([this, worker, batch = std::move(batch)]() mutable { RunCall(worker, std::move(batch)); }).detach();
  }
}

void BatchDispatcher::RunCall(std::shared_ptr<WorkerHandle> worker,
                              std::vector<std::shared_ptr<RequestChannel>> channels) {
  grpc::ClientContext ctx;
  v1::WorkerBatch batch;
  std::map<std::string, std::shared_ptr<RequestChannel>> open;
  for (auto& channel : channels) {
    *batch.add_requests() = channel->request();
    open[channel->request().request_id()] = channel;
  }
  {
    absl::MutexLock lock(&mu_);
    calls_.insert(&ctx);
    if (stop_) ctx.TryCancel();
  }
  auto reader = worker->stub->Generate(&ctx, batch);
  v1::WorkerEvent event;
  // Read to the end even after every final event: the worker closes the
  // call right after the last one, and Finish wants a drained stream.
  while (reader->Read(&event)) {
    for (v1::RequestUpdate& update : *event.mutable_updates()) {
      auto it = open.find(update.request_id());
      if (it == open.end()) continue;
      const bool final_update = update.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
      std::shared_ptr<RequestChannel> channel = it->second;
      if (final_update) open.erase(it);
      channel->Push(std::move(update));
    }
  }
  grpc::Status status = reader->Finish();
  absl::Status failure = FromGrpcStatus(status);
  if (failure.ok()) failure = absl::InternalError("the worker ended the call without a final event");
  for (auto& [id, channel] : open) {
    channel->Close(absl::Status(failure.code(),
                                absl::StrCat("worker ", worker->address, ": ", failure.message())));
  }
  absl::MutexLock lock(&mu_);
  calls_.erase(&ctx);
  --call_threads_;
}

}  // namespace polar
