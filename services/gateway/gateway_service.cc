// See gateway_service.h. One generation = one GenerationRun on its own
// thread: it tokenizes, waits for admission, streams from a worker, and
// hands each client message to a sink (the streaming reactor writes it, the
// unary reactor accumulates it), so Generate and GenerateStream share every
// line of the relay logic and, for the same seed, return the same text.
#include "services/gateway/gateway_service.h"

#include <deque>
#include <functional>
#include <random>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/common/status_mapping.h"
#include "services/gateway/batch_dispatcher.h"
#include "services/gateway/stop_sequences.h"

namespace polar {

RequestLimits LimitsForModel(const ServedModel& model, int default_max_tokens) {
  RequestLimits limits;
  limits.vocab_size = model.info.model().vocab_size();
  limits.max_context_tokens = model.info.model().max_context_tokens();
  limits.has_chat_template = model.info.model().has_chat_template() && !model.tokenizer->chat_template().empty();
  limits.default_max_tokens = default_max_tokens;
  return limits;
}

struct GatewayService::Shared {
  WorkerPool* pool;
  GatewayOptions options;
  std::unique_ptr<BatchDispatcher> dispatcher;
  GatewayMetrics metrics;
  std::atomic<int> queued{0};
  std::atomic<uint64_t> next_request{0};
  absl::Mutex rng_mu;
  std::mt19937_64 rng ABSL_GUARDED_BY(rng_mu){std::random_device{}()};

  uint64_t RandomSeed() {
    absl::MutexLock lock(&rng_mu);
    return rng();
  }

  void CountRequest(const absl::Status& status, v1::FinishReason reason) {
    std::string reason_label = "none";
    if (status.ok()) {
      switch (reason) {
        case v1::FINISH_REASON_LENGTH: reason_label = "length"; break;
        case v1::FINISH_REASON_STOP_TOKEN: reason_label = "stop_token"; break;
        case v1::FINISH_REASON_STOP_SEQUENCE: reason_label = "stop_sequence"; break;
        default: reason_label = "other"; break;
      }
    }
    auto counter = metrics.requests->WithLabels({absl::StatusCodeToString(status.code()), reason_label});
    if (counter.ok()) (*counter)->Increment();
  }
};

namespace {

// Lets the client side (reactor OnCancel) cancel the request wherever the
// generation thread has it at that moment (queued for a batch or running).
class CancelHook {
 public:
  void Cancel() {
    std::shared_ptr<RequestChannel> channel;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      channel = channel_;
    }
    if (channel != nullptr) channel->Cancel();
  }
  // False when already cancelled (the request must not be dispatched).
  bool Attach(std::shared_ptr<RequestChannel> channel) {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return false;
    channel_ = std::move(channel);
    return true;
  }
  void Detach() {
    absl::MutexLock lock(&mu_);
    channel_ = nullptr;
  }
  bool cancelled() const {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

 private:
  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<RequestChannel> channel_ ABSL_GUARDED_BY(mu_);
};

using Sink = std::function<void(v1::GenerateStreamResponse&&)>;

// Holds a queue slot from admission until the worker starts the request.
class QueueSlot {
 public:
  explicit QueueSlot(std::atomic<int>* queued) : queued_(queued) {}
  ~QueueSlot() { Release(); }
  void Release() {
    if (queued_ != nullptr) queued_->fetch_sub(1, std::memory_order_relaxed);
    queued_ = nullptr;
  }

 private:
  std::atomic<int>* queued_;
};

absl::StatusOr<std::vector<int32_t>> TokenizePrompt(const Tokenizer& tokenizer,
                                                    const v1::GenerateRequest& request) {
  switch (request.input_case()) {
    case v1::GenerateRequest::kText:
      return tokenizer.Encode(request.text(), !request.has_add_special_tokens() || request.add_special_tokens(),
                              /*parse_special=*/true);
    case v1::GenerateRequest::kTokenIds:
      return std::vector<int32_t>(request.token_ids().ids().begin(), request.token_ids().ids().end());
    case v1::GenerateRequest::kChat: {
      std::vector<ChatMessage> messages;
      for (const auto& m : request.chat().messages()) messages.push_back({m.role(), m.content()});
      auto rendered = ApplyChatTemplate(tokenizer, messages, /*add_generation_prompt=*/true);
      if (!rendered.ok()) return absl::InvalidArgumentError(absl::StrCat("chat: ", rendered.status().message()));
      return tokenizer.Encode(*rendered, /*add_special=*/false, /*parse_special=*/true);
    }
    default:
      return absl::InvalidArgumentError("input: not set");
  }
}

void FillToken(const Tokenizer& tokenizer, int32_t id, const v1::TokenLogprobs* logprobs, v1::Token* out) {
  out->set_id(id);
  out->set_special(tokenizer.IsSpecial(id));
  // Special tokens carry their spelling (never part of the text).
  const std::string_view piece = tokenizer.TokenPiece(id);
  out->set_piece(std::string(out->special() && piece.empty() ? tokenizer.TokenText(id) : piece));
  if (logprobs != nullptr) {
    *out->mutable_logprobs() = *logprobs;
    for (auto& top : *out->mutable_logprobs()->mutable_top()) {
      top.set_piece(std::string(tokenizer.TokenPiece(top.token_id())));
    }
  }
}

// One generation, run on its own thread. Returns the RPC's status; on OK the
// sink has received the final message (finish reason set).
absl::Status RunGeneration(GatewayService::Shared& shared, const v1::GenerateRequest& request,
                           absl::Time received, std::chrono::system_clock::time_point deadline,
                           CancelHook& hook, const Sink& sink, v1::FinishReason* finish_out) {
  auto model = shared.pool->model();
  if (model == nullptr) return absl::UnavailableError("no worker is ready yet");
  const Tokenizer& tokenizer = *model->tokenizer;
  const RequestLimits limits = LimitsForModel(*model, shared.options.default_max_tokens);
  if (auto status = ValidateGenerateRequest(request, limits); !status.ok()) return status;
  auto prompt = TokenizePrompt(tokenizer, request);
  if (!prompt.ok()) return prompt.status();
  if (auto status = ValidatePromptLength(prompt->size(), limits); !status.ok()) return status;
  auto sampling = ResolveSampling(request, limits, shared.RandomSeed());
  if (!sampling.ok()) return sampling.status();

  // Admission: a full queue answers at once rather than making clients wait blind.
  if (shared.queued.fetch_add(1, std::memory_order_relaxed) >= shared.options.max_queue) {
    shared.queued.fetch_sub(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(
        absl::StrCat("the gateway's admission queue is full (", shared.options.max_queue, " requests); retry later"));
  }
  QueueSlot slot(&shared.queued);

  const std::string client_id =
      request.has_request_id() ? request.request_id() : absl::StrCat("req-", shared.next_request.fetch_add(1));
  v1::WorkerRequest worker_request = MakeWorkerRequest(request, *sampling, *prompt, limits);
  worker_request.set_request_id(absl::StrCat(shared.options.instance_id, "/", client_id, "/",
                                             shared.next_request.fetch_add(1)));

  std::set<std::string> tried;
  absl::Status last_error = absl::UnavailableError("no worker is ready");
  while (true) {
    if (hook.cancelled()) return absl::CancelledError("the client cancelled");
    const bool has_deadline = deadline != std::chrono::system_clock::time_point::max();
    if (has_deadline) {
      absl::Duration left = absl::FromChrono(deadline) - absl::Now();
      if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("the request's deadline passed");
      *worker_request.mutable_timeout() = google::protobuf::Duration();
      worker_request.mutable_timeout()->set_seconds(absl::ToInt64Seconds(left));
      worker_request.mutable_timeout()->set_nanos(
          static_cast<int32_t>(absl::ToInt64Nanoseconds(left - absl::Seconds(absl::ToInt64Seconds(left)))));
    }
    auto channel = std::make_shared<RequestChannel>(worker_request);
    if (!hook.Attach(channel)) return absl::CancelledError("the client cancelled");
    shared.dispatcher->Submit(channel, tried);

    IncrementalDetokenizer detokenizer(tokenizer, /*skip_special=*/true);
    StopSequenceMatcher matcher(std::vector<std::string>(request.stop().begin(), request.stop().end()));
    bool started = false;
    int completion_tokens = 0;
    double queue_seconds = 0, ttft_seconds = 0;
    absl::Time last_token_time;
    bool done = false;
    absl::Status result;
    v1::RequestUpdate update;
    absl::Status end;
    while (!done && channel->Pop(&update, &end)) {
      {
        const absl::Time now = absl::Now();
        if (update.started() && !started) {
          started = true;
          queue_seconds = absl::ToDoubleSeconds(now - received);
          shared.metrics.queue_seconds->Observe(queue_seconds);
          slot.Release();
        }
        v1::GenerateStreamResponse out;
        out.set_request_id(client_id);
        std::string text;
        bool stop_matched = false;
        for (int i = 0; i < update.token_ids_size() && !stop_matched; ++i) {
          const int32_t id = update.token_ids(i);
          if (completion_tokens == 0) {
            ttft_seconds = absl::ToDoubleSeconds(now - received);
            shared.metrics.ttft_seconds->Observe(ttft_seconds);
          } else if (i == 0) {
            shared.metrics.inter_token_seconds->Observe(absl::ToDoubleSeconds(now - last_token_time) /
                                                        update.token_ids_size());
          }
          ++completion_tokens;
          FillToken(tokenizer, id, i < update.logprobs_size() ? &update.logprobs(i) : nullptr, out.add_tokens());
          StopSequenceMatcher::Result r = matcher.Push(detokenizer.Push(id));
          text += r.text;
          if (r.matched) {
            stop_matched = true;
            out.set_stop_sequence(r.stop);
          }
        }
        if (update.token_ids_size() > 0) last_token_time = now;
        v1::FinishReason reason = update.finish_reason();
        if (stop_matched) {
          reason = v1::FINISH_REASON_STOP_SEQUENCE;
          channel->Cancel();  // the worker stops it; the rest of its batch runs on
        } else if (reason != v1::FINISH_REASON_UNSPECIFIED) {
          // The end: release what the detokenizer and the matcher held back.
          StopSequenceMatcher::Result r = matcher.Push(detokenizer.Flush());
          text += r.text;
          if (r.matched) {
            reason = v1::FINISH_REASON_STOP_SEQUENCE;
            out.set_stop_sequence(r.stop);
          } else {
            text += matcher.Flush();
          }
        }
        switch (reason) {
          case v1::FINISH_REASON_UNSPECIFIED:
            break;
          case v1::FINISH_REASON_LENGTH:
          case v1::FINISH_REASON_STOP_TOKEN:
          case v1::FINISH_REASON_STOP_SEQUENCE: {
            out.set_finish_reason(reason);
            out.mutable_usage()->set_prompt_tokens(static_cast<int32_t>(prompt->size()));
            out.mutable_usage()->set_completion_tokens(completion_tokens);
            out.mutable_timings()->set_queue_seconds(queue_seconds);
            out.mutable_timings()->set_time_to_first_token_seconds(ttft_seconds);
            out.mutable_timings()->set_total_seconds(absl::ToDoubleSeconds(absl::Now() - received));
            out.set_seed(sampling->seed);
            *finish_out = reason;
            done = true;
            break;
          }
          case v1::FINISH_REASON_CANCELLED:
            result = absl::CancelledError("the request was cancelled on the worker");
            done = true;
            break;
          case v1::FINISH_REASON_DEADLINE_EXCEEDED:
            result = absl::DeadlineExceededError("the request's deadline passed on the worker");
            done = true;
            break;
          default:
            result = FromErrorStatus(update.error());
            if (result.ok()) result = absl::InternalError("the worker failed the request without a reason");
            done = true;
            break;
        }
        if (!result.ok()) break;
        out.set_text(std::move(text));
        if (done || out.tokens_size() > 0 || !out.text().empty()) sink(std::move(out));
      }
    }
    hook.Detach();
    if (done) return result;
    if (hook.cancelled()) return absl::CancelledError("the client cancelled");
    const std::string address = channel->worker_address();
    if (address.empty()) return tried.empty() ? end : last_error;  // no worker could take it
    // The worker keeps no client-visible state for a request that produced no
    // tokens, so it can run again elsewhere.
    if (completion_tokens > 0) {
      return absl::UnavailableError(absl::StrCat("worker ", address, " failed mid-stream: ", end.message()));
    }
    if (end.code() == absl::StatusCode::kInvalidArgument || end.code() == absl::StatusCode::kDeadlineExceeded) {
      return end;
    }
    tried.insert(address);
    last_error = absl::UnavailableError(end.message());
  }
}

// Runs RunGeneration on a thread and owns it; OnDone-style cleanup joins it.
class GenerationThread {
 public:
  ~GenerationThread() {
    if (!thread_.joinable()) return;
    // Should gRPC ever run OnDone inline on the generation thread itself
    // (Finish called from it), that thread is past its last use of the
    // reactor and must not join itself.
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }
  void Start(std::function<void()> body) { thread_ = std::thread(std::move(body)); }

 private:
  std::thread thread_;
};

class StreamReactor final : public grpc::ServerWriteReactor<v1::GenerateStreamResponse> {
 public:
  StreamReactor(std::shared_ptr<GatewayService::Shared> shared, grpc::CallbackServerContext* context,
                const v1::GenerateRequest* request)
      : shared_(std::move(shared)) {
    const absl::Time received = absl::Now();
    const auto deadline = context->deadline();
    thread_.Start([this, request, received, deadline] {
      v1::FinishReason reason = v1::FINISH_REASON_UNSPECIFIED;
      absl::Status status = RunGeneration(
          *shared_, *request, received, deadline, hook_,
          [this](v1::GenerateStreamResponse&& message) { Enqueue(std::move(message)); }, &reason);
      shared_->CountRequest(status, reason);
      if (status.ok()) shared_->metrics.e2e_seconds->Observe(absl::ToDoubleSeconds(absl::Now() - received));
      Complete(ToClientGrpcStatus(status));
    });
  }

  void OnWriteDone(bool ok) override {
    v1::GenerateStreamResponse* next = nullptr;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) {
        broken_ = true;
        queue_.clear();
      }
      if (!queue_.empty()) {
        next = &queue_.front();
      } else {
        writing_ = false;
        finish = complete_ && !finished_;
        if (finish) finished_ = true;
      }
    }
    if (!ok) hook_.Cancel();
    if (next != nullptr) StartWrite(next);
    if (finish) Finish(final_status_);
  }

  void OnCancel() override { hook_.Cancel(); }

  void OnDone() override { delete this; }

 private:
  void Enqueue(v1::GenerateStreamResponse&& message) {
    v1::GenerateStreamResponse* start = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (broken_) return;
      queue_.push_back(std::move(message));
      if (!writing_) {
        writing_ = true;
        start = &queue_.front();
      }
    }
    if (start != nullptr) StartWrite(start);
  }

  void Complete(grpc::Status status) {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      final_status_ = std::move(status);
      complete_ = true;
      if (!writing_ && !finished_) finished_ = finish = true;
    }
    if (finish) Finish(final_status_);
  }

  std::shared_ptr<GatewayService::Shared> shared_;
  CancelHook hook_;
  absl::Mutex mu_;
  // Messages waiting to be written; the front is being written while writing_.
  std::deque<v1::GenerateStreamResponse> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool complete_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_;  // written before complete_ is set, read after
  // Last member: destroyed (joined) first, while the members it uses live.
  GenerationThread thread_;
};

class UnaryGenerateReactor final : public grpc::ServerUnaryReactor {
 public:
  UnaryGenerateReactor(std::shared_ptr<GatewayService::Shared> shared, grpc::CallbackServerContext* context,
                       const v1::GenerateRequest* request, v1::GenerateResponse* response)
      : shared_(std::move(shared)) {
    const absl::Time received = absl::Now();
    const auto deadline = context->deadline();
    thread_.Start([this, request, response, received, deadline] {
      v1::FinishReason reason = v1::FINISH_REASON_UNSPECIFIED;
      std::string text;
      absl::Status status = RunGeneration(
          *shared_, *request, received, deadline, hook_,
          [response, &text](v1::GenerateStreamResponse&& message) {
            response->set_request_id(message.request_id());
            text += message.text();
            for (auto& token : *message.mutable_tokens()) *response->add_tokens() = std::move(token);
            if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
              response->set_finish_reason(message.finish_reason());
              *response->mutable_usage() = message.usage();
              *response->mutable_timings() = message.timings();
              response->set_seed(message.seed());
              response->set_stop_sequence(message.stop_sequence());
            }
          },
          &reason);
      response->set_text(std::move(text));
      shared_->CountRequest(status, reason);
      if (status.ok()) shared_->metrics.e2e_seconds->Observe(absl::ToDoubleSeconds(absl::Now() - received));
      Finish(ToClientGrpcStatus(status));
    });
  }
  void OnCancel() override { hook_.Cancel(); }
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<GatewayService::Shared> shared_;
  CancelHook hook_;
  GenerationThread thread_;  // last: joined first
};

GatewayMetrics RegisterMetrics(MetricsRegistry* registry, GatewayService::Shared* shared) {
  GatewayMetrics m;
  auto must = [](auto status_or) {
    if (!status_or.ok()) {
      fprintf(stderr, "polar-gateway: metric registration: %s\n", std::string(status_or.status().message()).c_str());
      abort();  // names are constants: a failure is a bug
    }
    return *status_or;
  };
  m.requests = must(registry->AddCounter({"polar_requests_total",
                                          "Generate requests finished, by gRPC code and finish reason",
                                          {"code", "finish_reason"}}));
  auto histogram = [&](const char* name, const char* help) {
    return &must(registry->AddHistogram({name, help, {}}, DefaultLatencyBuckets()))->Get();
  };
  m.queue_seconds = histogram("polar_request_queue_seconds",
                              "Time from receipt until a worker started the request, in seconds");
  m.ttft_seconds = histogram("polar_time_to_first_token_seconds",
                             "Time from receipt until the first generated token, in seconds");
  m.inter_token_seconds = histogram("polar_inter_token_latency_seconds",
                                    "Time between consecutive generated tokens of a request, in seconds");
  m.e2e_seconds = histogram("polar_e2e_request_latency_seconds",
                            "Time from receipt until a successful request finished, in seconds");
  m.worker_calls = &must(registry->AddCounter({"polar_gateway_worker_calls_total",
                                               "Worker.Generate calls (request batches) sent to workers", {}}))
                        ->Get();
  m.batch_size = &must(registry->AddHistogram({"polar_gateway_batch_size", "Requests per worker call", {}},
                                              {1, 2, 4, 8, 16, 32, 64, 128, 256}))
                      ->Get();
  auto status = registry->AddCallbackGauge(
      {"polar_gateway_queue_size", "Requests admitted by the gateway and not yet started by a worker", {}},
      [shared] { return static_cast<double>(shared->queued.load(std::memory_order_relaxed)); });
  if (!status.ok()) abort();
  WorkerPool* pool = shared->pool;
  status = registry->AddCallbackGauge({"polar_workers_ready", "Workers ready to take requests", {}},
                                      [pool] { return static_cast<double>(pool->num_ready()); });
  if (!status.ok()) abort();
  return m;
}

}  // namespace

GatewayService::GatewayService(WorkerPool* pool, MetricsRegistry* registry, GatewayOptions options)
    : shared_(std::make_shared<Shared>()) {
  shared_->pool = pool;
  shared_->options = std::move(options);
  shared_->metrics = RegisterMetrics(registry, shared_.get());
  shared_->dispatcher = std::make_unique<BatchDispatcher>(pool, shared_->options.max_batch,
                                                          absl::Milliseconds(shared_->options.batch_window_ms),
                                                          shared_->metrics.worker_calls, shared_->metrics.batch_size);
}

GatewayService::~GatewayService() = default;

int GatewayService::queue_size() const { return shared_->queued.load(std::memory_order_relaxed); }

grpc::ServerUnaryReactor* GatewayService::Generate(grpc::CallbackServerContext* context,
                                                   const v1::GenerateRequest* request,
                                                   v1::GenerateResponse* response) {
  return new UnaryGenerateReactor(shared_, context, request, response);
}

grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GatewayService::GenerateStream(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return new StreamReactor(shared_, context, request);
}

grpc::ServerUnaryReactor* GatewayService::Tokenize(grpc::CallbackServerContext* context,
                                                   const v1::TokenizeRequest* request,
                                                   v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto model = shared_->pool->model();
  if (model == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "no worker is ready yet"));
    return reactor;
  }
  const RequestLimits limits = LimitsForModel(*model, shared_->options.default_max_tokens);
  if (auto status = ValidateTokenizeRequest(*request, limits); !status.ok()) {
    reactor->Finish(ToClientGrpcStatus(status));
    return reactor;
  }
  const Tokenizer& tokenizer = *model->tokenizer;
  std::vector<int32_t> ids;
  if (request->has_chat()) {
    std::vector<ChatMessage> messages;
    for (const auto& m : request->chat().messages()) messages.push_back({m.role(), m.content()});
    auto rendered = ApplyChatTemplate(tokenizer, messages, /*add_generation_prompt=*/true);
    if (!rendered.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   absl::StrCat("chat: ", rendered.status().message())));
      return reactor;
    }
    response->set_rendered_text(*rendered);
    ids = tokenizer.Encode(*rendered, /*add_special=*/false, /*parse_special=*/true);
  } else {
    response->set_rendered_text(request->text());
    ids = tokenizer.Encode(request->text(),
                           !request->has_add_special_tokens() || request->add_special_tokens(),
                           /*parse_special=*/true);
  }
  for (int32_t id : ids) {
    response->add_token_ids(id);
    response->add_pieces(tokenizer.IsSpecial(id) ? std::string(tokenizer.TokenText(id))
                                                 : std::string(tokenizer.TokenPiece(id)));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GatewayService::GetModelInfo(grpc::CallbackServerContext* context,
                                                       const v1::GetModelInfoRequest* /*request*/,
                                                       v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto model = shared_->pool->model();
  if (model == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "no worker is ready yet"));
    return reactor;
  }
  const RequestLimits limits = LimitsForModel(*model, shared_->options.default_max_tokens);
  *response->mutable_model() = model->info.model();
  response->set_workers(shared_->pool->num_workers());
  response->set_workers_ready(shared_->pool->num_ready());
  response->set_version(shared_->options.version);
  response->set_max_prompt_tokens(limits.max_prompt_tokens());
  response->set_max_stop_sequences(limits.max_stop_sequences);
  response->set_max_logprobs(limits.max_logprobs);
  response->set_default_max_tokens(limits.default_max_tokens);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace polar
