// See worker_service.h.
#include "services/worker/worker_service.h"

#include <chrono>
#include <filesystem>
#include <thread>
#include <utility>
#include <vector>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/common/status_mapping.h"

namespace polar {

namespace {

v1::FinishReason ToProtoFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP_TOKEN;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kDeadline: return v1::FINISH_REASON_DEADLINE_EXCEEDED;
    case FinishReason::kError: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_ERROR;
}

// The protocol's request as the scheduler's, checked where the protocol adds
// rules of its own (density, logprobs, timeout); the engine checks the rest
// in Submit. `deadline` is the gRPC call's (InfiniteFuture when none).
absl::StatusOr<SequenceRequest> ToSequenceRequest(const v1::WorkerRequest& in, absl::Time receipt,
                                                  absl::Time deadline) {
  const v1::Density& density = in.density();
  if (density.mode() == v1::DENSITY_MODE_FIXED) {
    if (!(density.value() > 0.0f && density.value() <= 1.0f)) {
      return absl::InvalidArgumentError("density.value must be in (0, 1] with DENSITY_MODE_FIXED");
    }
  } else if (density.value() != 0.0f) {
    return absl::InvalidArgumentError("density.value must be 0 unless mode is DENSITY_MODE_FIXED");
  }
  if (in.has_logprobs() && in.logprobs() < 0) return absl::InvalidArgumentError("logprobs must be >= 0");
  SequenceRequest out;
  if (in.has_timeout()) {
    const absl::Duration timeout =
        absl::Seconds(in.timeout().seconds()) + absl::Nanoseconds(in.timeout().nanos());
    if (timeout < absl::ZeroDuration()) return absl::InvalidArgumentError("timeout must be >= 0");
    deadline = std::min(deadline, receipt + timeout);
  }
  out.deadline = deadline;
  out.prompt.assign(in.prompt_token_ids().begin(), in.prompt_token_ids().end());
  out.params.temperature = in.sampling().temperature();
  out.params.top_k = in.sampling().top_k();
  out.params.top_p = in.sampling().top_p();
  out.params.repetition_penalty = in.sampling().repetition_penalty();
  out.params.seed = in.sampling().seed();
  out.params.stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  out.params.ignore_eos = in.ignore_eos();
  out.params.max_tokens = in.max_tokens();
  // The engine resolves 0 to the calibrated default and refuses a density
  // below 1 when no routers are loaded.
  switch (density.mode()) {
    case v1::DENSITY_MODE_DENSE: out.density = 1.0f; break;
    case v1::DENSITY_MODE_FIXED: out.density = density.value(); break;
    default: out.density = 0.0f; break;
  }
  if (in.has_logprobs()) {
    out.logprobs = true;
    out.top_logprobs = in.logprobs();
  }
  return out;
}

// FNV-1a, 64 bits: stable across processes and builds (unlike std::hash).
std::string HexDigest(const std::string& bytes) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return absl::StrCat(absl::Hex(h, absl::kZeroPad16));
}

}  // namespace

v1::Tokenizer TokenizerToProto(const TokenizerData& data) {
  v1::Tokenizer out;
  out.set_source(data.source);
  for (const std::string& token : data.tokens) out.add_tokens(token);
  for (TokenType type : data.types) out.add_token_types(static_cast<v1::TokenType>(type));
  for (const auto& [left, right] : data.merges) {
    v1::Merge* merge = out.add_merges();
    merge->set_left(left);
    merge->set_right(right);
  }
  for (PreTokenizerStage stage : data.pre_tokenizer) {
    out.add_pre_tokenizer(static_cast<v1::PreTokenizerStage>(static_cast<int>(stage) + 1));
  }
  out.set_pre_tokenizer_name(data.pre_tokenizer_name);
  out.set_ignore_merges(data.ignore_merges);
  out.set_add_prefix_space(data.add_prefix_space);
  out.set_normalize_nfc(data.normalize_nfc);
  out.set_unk_for_unknown_bytes(data.unk_for_unknown_bytes);
  out.set_fuse_unk(data.fuse_unk);
  if (data.bos_id >= 0) out.set_bos_id(data.bos_id);
  if (data.eos_id >= 0) out.set_eos_id(data.eos_id);
  if (data.unk_id >= 0) out.set_unk_id(data.unk_id);
  if (data.pad_id >= 0) out.set_pad_id(data.pad_id);
  if (data.eot_id >= 0) out.set_eot_id(data.eot_id);
  if (data.eom_id >= 0) out.set_eom_id(data.eom_id);
  if (data.fim_pad_id >= 0) out.set_fim_pad_id(data.fim_pad_id);
  if (data.fim_rep_id >= 0) out.set_fim_rep_id(data.fim_rep_id);
  if (data.fim_sep_id >= 0) out.set_fim_sep_id(data.fim_sep_id);
  out.set_add_bos(data.add_bos);
  out.set_add_eos(data.add_eos);
  for (int32_t id : data.lstrip_ids) out.add_lstrip_ids(id);
  for (int32_t id : data.rstrip_ids) out.add_rstrip_ids(id);
  out.set_chat_template(data.chat_template);
  return out;
}

// ------------------------------------------------------------ Generate

// One Generate call. Owned by a shared_ptr that the engine callbacks share:
// gRPC is done with it at OnDone, but a cancelled request's final event may
// still arrive after that, and must find the object alive (and write nothing).
class WorkerService::GenerateReactor final : public grpc::ServerWriteReactor<v1::WorkerEvent> {
 public:
  GenerateReactor(WorkerService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {}

  void Start(std::shared_ptr<GenerateReactor> self, const v1::WorkerBatch& batch);
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  struct Slot {
    std::string request_id;
    uint64_t engine_id = 0;  // 0: never submitted
    bool final = false;
    bool started_sent = false;
    bool has_pending = false;
    bool logprobs = false;  // the request asked for them
    v1::RequestUpdate pending;
    int32_t completion_tokens = 0;
    absl::Time first_token = absl::InfiniteFuture();
    double queue_seconds = -1.0;  // from the engine's started event; < 0: never started
    int32_t preemptions = 0;
  };
  enum class Next { kNothing, kWrite, kFinish };

  void OnEngineEvent(size_t index, const TokenEvent& event);
  void FinishSlot(Slot& slot, v1::FinishReason reason, const absl::Status& status, int32_t prompt_tokens)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Next PlanNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the next write, or finishes the call, when due. Call unlocked.
  void Pump();
  std::vector<uint64_t> LiveEngineIds() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  WorkerService* service_;
  grpc::CallbackServerContext* context_;
  std::shared_ptr<GenerateReactor> self_;  // dropped at OnDone
  absl::Time receipt_ = absl::Now();
  absl::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  int64_t remaining_ ABSL_GUARDED_BY(mu_) = 0;  // slots without a final update
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;    // cancelled or a write failed
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called
  bool done_ ABSL_GUARDED_BY(mu_) = false;      // OnDone ran
  int64_t step_ ABSL_GUARDED_BY(mu_) = 0;
  v1::WorkerEvent out_ ABSL_GUARDED_BY(mu_);  // the message being written
};

void WorkerService::GenerateReactor::Start(std::shared_ptr<GenerateReactor> self, const v1::WorkerBatch& batch) {
  self_ = std::move(self);
  // Whole-batch refusals come before any event, so the gateway can retry elsewhere.
  if (!service_->ready()) {
    Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        service_->draining_.load() ? "worker is draining" : "worker is not ready"));
    return;
  }
  if (batch.requests_size() == 0) {
    Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "batch has no requests"));
    return;
  }
  const LoadReport load = service_->scheduler_->Load();
  if (load.waiting + batch.requests_size() > service_->options_.max_waiting) {
    Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("waiting queue full (", load.waiting, " waiting, max ",
                                     service_->options_.max_waiting, ")")));
    return;
  }
  absl::Time call_deadline = absl::InfiniteFuture();
  if (context_->deadline() != std::chrono::system_clock::time_point::max()) {
    call_deadline = absl::FromChrono(context_->deadline());
  }
  {
    absl::MutexLock lock(&mu_);
    slots_.resize(batch.requests_size());
    remaining_ = batch.requests_size();
    for (int i = 0; i < batch.requests_size(); ++i) {
      slots_[i].request_id = batch.requests(i).request_id();
      slots_[i].logprobs = batch.requests(i).has_logprobs();
    }
  }
  for (int i = 0; i < batch.requests_size(); ++i) {
    const v1::WorkerRequest& in = batch.requests(i);
    absl::Status status;
    absl::StatusOr<SequenceRequest> request = ToSequenceRequest(in, receipt_, call_deadline);
    if (request.ok() && in.request_id().empty()) status = absl::InvalidArgumentError("request_id is empty");
    if (!request.ok()) status = request.status();
    absl::StatusOr<uint64_t> engine_id = status.ok() ? service_->Claim(in.request_id()) : status;
    if (status.ok() && !engine_id.ok()) status = engine_id.status();
    if (status.ok()) {
      request->id = *engine_id;
      request->submit_time = receipt_;  // queue time counts from the batch's receipt, like the other stats
      std::shared_ptr<GenerateReactor> keep = self_;
      const size_t index = static_cast<size_t>(i);
      request->on_event = [keep, index](const TokenEvent& event) { keep->OnEngineEvent(index, event); };
      {
        absl::MutexLock lock(&mu_);
        slots_[i].engine_id = *engine_id;
      }
      status = service_->scheduler_->Submit(*std::move(request));
      if (!status.ok()) service_->Release(in.request_id());
    }
    absl::MutexLock lock(&mu_);
    if (!status.ok()) {
      slots_[i].engine_id = 0;
      FinishSlot(slots_[i], v1::FINISH_REASON_ERROR, status, in.prompt_token_ids_size());
    } else if (broken_) {
      service_->scheduler_->Cancel(*engine_id);  // the call broke while we were submitting
    }
  }
  Pump();
}

void WorkerService::GenerateReactor::OnEngineEvent(size_t index, const TokenEvent& event) {
  {
    absl::MutexLock lock(&mu_);
    Slot& slot = slots_[index];
    if (slot.final) return;
    int64_t step = 0;
    const SchedulerCounters& counters = service_->scheduler_->counters();
    for (int p = 0; p < kNumStepPhases; ++p) step += counters.steps[p].load(std::memory_order_relaxed);
    step_ = std::max(step_, step);
    if (!slot.has_pending) {
      slot.pending.Clear();
      slot.pending.set_request_id(slot.request_id);
      slot.has_pending = true;
    }
    slot.preemptions = event.preemptions;
    // The engine says when the sequence joined a running batch; a sequence
    // that ends before that is marked started by FinishSlot.
    if (event.started) {
      slot.queue_seconds = event.queue_seconds;
      if (!slot.started_sent) {
        slot.pending.set_started(true);
        slot.started_sent = true;
      }
    }
    if (event.token >= 0) {
      slot.pending.add_token_ids(event.token);
      ++slot.completion_tokens;
      if (slot.first_token == absl::InfiniteFuture()) slot.first_token = absl::Now();
      if (slot.logprobs) {
        v1::TokenLogprobs* lp = slot.pending.add_logprobs();
        lp->set_logprob(event.logprob);
        for (const TokenLogprob& top : event.top_logprobs) {
          v1::TopLogprob* t = lp->add_top();
          t->set_token_id(top.token);
          t->set_logprob(top.logprob);
        }
      }
    }
    if (event.finished) {
      FinishSlot(slot, ToProtoFinishReason(event.finish_reason), event.status, event.prompt_tokens);
      service_->Release(slot.request_id);
    }
  }
  Pump();
}

void WorkerService::GenerateReactor::FinishSlot(Slot& slot, v1::FinishReason reason, const absl::Status& status,
                                                int32_t prompt_tokens) {
  if (slot.final) return;
  slot.final = true;
  --remaining_;
  if (!slot.has_pending) {
    slot.pending.Clear();
    slot.pending.set_request_id(slot.request_id);
    slot.has_pending = true;
  }
  if (!slot.started_sent) {
    slot.pending.set_started(true);
    slot.started_sent = true;
  }
  slot.pending.set_finish_reason(reason);
  if (reason == v1::FINISH_REASON_ERROR) {
    *slot.pending.mutable_error() = ToErrorStatus(status.ok() ? absl::InternalError("failed") : status);
  }
  const absl::Time now = absl::Now();
  v1::RequestStats* stats = slot.pending.mutable_stats();
  stats->set_prompt_tokens(prompt_tokens);
  stats->set_completion_tokens(slot.completion_tokens);
  if (slot.first_token != absl::InfiniteFuture()) {
    stats->set_time_to_first_token_seconds(absl::ToDoubleSeconds(slot.first_token - receipt_));
  }
  stats->set_total_seconds(absl::ToDoubleSeconds(now - receipt_));
  // Never admitted (cancelled, expired or refused while waiting): it was
  // queued for its whole life.
  stats->set_queue_seconds(slot.queue_seconds >= 0.0 ? slot.queue_seconds : stats->total_seconds());
  stats->set_preemptions(slot.preemptions);
}

WorkerService::GenerateReactor::Next WorkerService::GenerateReactor::PlanNext() {
  if (finished_ || write_in_flight_) return Next::kNothing;
  if (broken_) {
    finished_ = true;
    return Next::kFinish;
  }
  out_.Clear();
  for (Slot& slot : slots_) {
    if (!slot.has_pending) continue;
    out_.add_updates()->Swap(&slot.pending);
    slot.has_pending = false;
  }
  if (out_.updates_size() > 0) {
    out_.set_step(step_);
    write_in_flight_ = true;
    return Next::kWrite;
  }
  if (remaining_ == 0) {
    finished_ = true;
    return Next::kFinish;
  }
  return Next::kNothing;
}

void WorkerService::GenerateReactor::Pump() {
  Next next;
  bool broken;
  {
    absl::MutexLock lock(&mu_);
    next = PlanNext();
    broken = broken_;
  }
  // out_ is not touched under the lock while a write is in flight.
  if (next == Next::kWrite) StartWrite(&out_);
  if (next == Next::kFinish) {
    Finish(broken ? grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled") : grpc::Status::OK);
  }
}

std::vector<uint64_t> WorkerService::GenerateReactor::LiveEngineIds() {
  std::vector<uint64_t> ids;
  for (const Slot& slot : slots_) {
    if (!slot.final && slot.engine_id != 0) ids.push_back(slot.engine_id);
  }
  return ids;
}

void WorkerService::GenerateReactor::OnWriteDone(bool ok) {
  std::vector<uint64_t> cancel;
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok && !broken_) {
      broken_ = true;
      cancel = LiveEngineIds();
    }
  }
  for (uint64_t id : cancel) service_->scheduler_->Cancel(id);
  Pump();
}

void WorkerService::GenerateReactor::OnCancel() {
  std::vector<uint64_t> cancel;
  {
    absl::MutexLock lock(&mu_);
    if (!broken_) {
      broken_ = true;
      cancel = LiveEngineIds();
    }
  }
  for (uint64_t id : cancel) service_->scheduler_->Cancel(id);
  Pump();
}

void WorkerService::GenerateReactor::OnDone() {
  std::shared_ptr<GenerateReactor> keep;
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    keep = std::move(self_);
  }
  // `keep` may be the last owner: nothing touches members after this scope.
}

// ------------------------------------------------------------ WatchLoad

class WorkerService::WatchLoadReactor final : public grpc::ServerWriteReactor<v1::LoadReport> {
 public:
  WatchLoadReactor(const WorkerService* service, absl::Duration interval) : service_(service), interval_(interval) {
    thread_ = std::thread([this] { Loop(); });
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok && !stop_.HasBeenNotified()) stop_.Notify();
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    if (!stop_.HasBeenNotified()) stop_.Notify();
  }
  // Finish was the loop thread's last act, so the join is immediate.
  void OnDone() override {
    thread_.join();
    delete this;
  }

 private:
  void Loop() {
    do {
      absl::MutexLock lock(&mu_);
      if (write_in_flight_) continue;  // a slow reader skips reports rather than queueing them
      report_ = service_->Report();
      write_in_flight_ = true;
      StartWrite(&report_);
    } while (!stop_.WaitForNotificationWithTimeout(interval_));
    mu_.LockWhen(absl::Condition(
        +[](bool* in_flight) { return !*in_flight; }, &write_in_flight_));
    mu_.Unlock();
    Finish(grpc::Status::OK);
  }

  const WorkerService* service_;
  absl::Duration interval_;
  absl::Notification stop_;
  absl::Mutex mu_;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  v1::LoadReport report_;  // written only while no write is in flight
  std::thread thread_;
};

// ------------------------------------------------------------- service

WorkerService::WorkerService(const ModelRunner* runner, Scheduler* scheduler, const Tokenizer* tokenizer,
                             WorkerServiceOptions options)
    : runner_(runner), scheduler_(scheduler), tokenizer_(tokenizer), options_(std::move(options)) {
  if (tokenizer_ != nullptr) {
    tokenizer_proto_ = TokenizerToProto(tokenizer_->data());
    std::string bytes;
    google::protobuf::io::StringOutputStream stream(&bytes);
    {
      google::protobuf::io::CodedOutputStream coded(&stream);
      coded.SetSerializationDeterministic(true);
      tokenizer_proto_.SerializeToCodedStream(&coded);
    }
    tokenizer_digest_ = HexDigest(bytes);
  }
}

absl::StatusOr<uint64_t> WorkerService::Claim(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = in_flight_.try_emplace(request_id, next_engine_id_);
  if (!inserted) return absl::AlreadyExistsError(absl::StrCat("request id \"", request_id, "\" is in flight"));
  return next_engine_id_++;
}

void WorkerService::Release(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  in_flight_.erase(request_id);
}

absl::Status WorkerService::WarmUp() {
  const std::string id = "polar-worker-warmup";
  absl::StatusOr<uint64_t> engine_id = Claim(id);
  if (!engine_id.ok()) return engine_id.status();
  struct Result {
    absl::Notification done;
    absl::Status status;
    int32_t tokens = 0;
  };
  auto result = std::make_shared<Result>();
  SequenceRequest request;
  request.id = *engine_id;
  request.prompt = {tokenizer_ != nullptr && tokenizer_->bos_id() >= 0 ? tokenizer_->bos_id() : 0};
  request.params.temperature = 0.0f;
  request.params.max_tokens = 1;
  request.params.ignore_eos = true;
  request.on_event = [result](const TokenEvent& event) {
    if (event.token >= 0) ++result->tokens;
    if (!event.finished) return;
    result->status = event.status;
    result->done.Notify();
  };
  absl::Status status = scheduler_->Submit(std::move(request));
  if (status.ok()) {
    result->done.WaitForNotification();
    status = result->status;
    if (status.ok() && result->tokens != 1) status = absl::InternalError("warm-up step generated no token");
  }
  Release(id);
  if (!status.ok()) return absl::Status(status.code(), absl::StrCat("warm-up step: ", status.message()));
  ready_.store(true);
  return absl::OkStatus();
}

void WorkerService::BeginDrain() { draining_.store(true); }

int64_t WorkerService::in_flight() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(in_flight_.size());
}

v1::WorkerInfo WorkerService::Info() const {
  v1::WorkerInfo info;
  info.set_instance_id(options_.instance_id);
  info.set_device(options_.device);
  info.set_version(options_.version);
  info.set_tokenizer_digest(tokenizer_digest_);
  const ModelConfig& config = runner_->config();
  v1::ModelFacts* facts = info.mutable_model();
  facts->set_name(std::filesystem::path(runner_->checkpoint().path).stem().string());
  facts->set_architecture(config.model_type);
  facts->set_num_layers(static_cast<int32_t>(config.num_layers));
  facts->set_hidden_size(static_cast<int32_t>(config.hidden_size));
  facts->set_num_heads(static_cast<int32_t>(config.num_heads));
  facts->set_num_kv_heads(static_cast<int32_t>(config.num_kv_heads));
  facts->set_head_dim(static_cast<int32_t>(config.head_dim));
  facts->set_vocab_size(static_cast<int32_t>(config.vocab_size));
  facts->set_max_context_tokens(static_cast<int32_t>(config.max_position_embeddings));
  if (tokenizer_ != nullptr) {
    for (int32_t id : tokenizer_->eos_ids()) facts->add_end_of_generation_ids(id);
    if (tokenizer_->bos_id() >= 0) facts->set_bos_token_id(tokenizer_->bos_id());
    facts->set_has_chat_template(!tokenizer_->chat_template().empty());
  } else {
    for (int32_t id : config.eos_token_ids) facts->add_end_of_generation_ids(id);
    if (config.bos_token_id >= 0) facts->set_bos_token_id(config.bos_token_id);
  }
  const HeadRouters* routers = runner_->heads().routers();
  facts->set_default_density(runner_->default_density());
  facts->set_sparsity_available(routers != nullptr);
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    if (routers == nullptr || routers->dense[layer]) facts->add_dense_layers(static_cast<int32_t>(layer));
  }
  return info;
}

v1::LoadReport WorkerService::Report() const {
  const LoadReport load = scheduler_->Load();
  v1::LoadReport report;
  report.set_instance_id(options_.instance_id);
  report.set_ready(ready());
  report.set_draining(draining_.load());
  report.set_running(static_cast<int32_t>(load.running));
  report.set_waiting(static_cast<int32_t>(load.waiting));
  report.set_free_kv_blocks(load.free_kv_blocks);
  report.set_total_kv_blocks(load.total_kv_blocks);
  report.set_kv_block_size(runner_->options().block_size);
  report.set_max_batch_tokens(options_.max_batch_tokens);
  report.set_max_running(options_.max_running);
  report.set_max_waiting(options_.max_waiting);
  return report;
}

grpc::ServerWriteReactor<v1::WorkerEvent>* WorkerService::Generate(grpc::CallbackServerContext* context,
                                                                   const v1::WorkerBatch* batch) {
  auto reactor = std::make_shared<GenerateReactor>(this, context);
  GenerateReactor* raw = reactor.get();
  raw->Start(std::move(reactor), *batch);
  return raw;
}

grpc::ServerUnaryReactor* WorkerService::Cancel(grpc::CallbackServerContext* context,
                                                const v1::CancelRequest* request, v1::CancelResponse* response) {
  std::vector<std::pair<std::string, uint64_t>> found;
  {
    absl::MutexLock lock(&mu_);
    for (const std::string& id : request->request_ids()) {
      auto it = in_flight_.find(id);
      if (it != in_flight_.end()) found.emplace_back(id, it->second);
    }
  }
  for (const auto& [id, engine_id] : found) {
    scheduler_->Cancel(engine_id);
    response->add_cancelled_ids(id);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::GetLoad(grpc::CallbackServerContext* context,
                                                 const v1::GetLoadRequest*, v1::LoadReport* response) {
  *response = Report();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<v1::LoadReport>* WorkerService::WatchLoad(grpc::CallbackServerContext*,
                                                                   const v1::WatchLoadRequest* request) {
  absl::Duration interval = absl::Milliseconds(100);
  if (request->has_interval()) {
    const absl::Duration asked =
        absl::Seconds(request->interval().seconds()) + absl::Nanoseconds(request->interval().nanos());
    if (asked >= absl::Milliseconds(10)) interval = asked;
  }
  return new WatchLoadReactor(this, interval);
}

grpc::ServerUnaryReactor* WorkerService::GetModelInfo(grpc::CallbackServerContext* context,
                                                      const v1::GetWorkerInfoRequest*, v1::WorkerInfo* response) {
  *response = Info();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::GetTokenizer(grpc::CallbackServerContext* context,
                                                      const v1::GetTokenizerRequest*, v1::Tokenizer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (tokenizer_ == nullptr) {
    reactor->Finish(ToGrpcStatus(absl::NotFoundError("the model has no tokenizer")));
    return reactor;
  }
  *response = tokenizer_proto_;
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace polar
