// See scheduler.h.
#include "engine/runtime/scheduler.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"

namespace polar {

const char* StepPhaseName(StepPhase phase) {
  switch (phase) {
    case StepPhase::kPrefill: return "prefill";
    case StepPhase::kDecode: return "decode";
    case StepPhase::kMixed: return "mixed";
  }
  return "unknown";
}

struct StepScheduler::Sequence {
  Sequence(SequenceRequest r, std::vector<int32_t> eog, int64_t block_size)
      : request(std::move(r)),
        prompt_len(static_cast<int32_t>(request.prompt.size())),
        eog_ids(std::move(eog)),
        kv(block_size),
        sampler(request.params),
        density(request.density) {
    // Room for every token up front: appending a sampled token never allocates.
    tokens.reserve(request.prompt.size() + request.params.max_tokens);
    tokens = std::move(request.prompt);
  }
  uint64_t id() const { return request.id; }
  // Tokens not yet in the KV cache: the prompt's tail (or, after a
  // preemption, everything) or the token sampled last step.
  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - kv.length(); }
  bool decoding() const { return generated > 0 && pending() == 1; }

  SequenceRequest request;      // its prompt moved into `tokens`
  float density;                // resolved: in (0, 1]
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int32_t prompt_len;
  int32_t generated = 0;
  int32_t preemptions = 0;
  std::vector<int32_t> eog_ids;
  SequenceKv kv;
  SequenceSampler sampler;  // travels with the sequence through preemptions
  bool admitted_once = false;
  bool done = false;
};

StepScheduler::StepScheduler(ModelRunner& runner, SchedulerOptions options)
    : runner_(runner),
      options_(std::move(options)),
      max_batch_tokens_(options_.max_batch_tokens > 0 ? options_.max_batch_tokens
                                                      : runner.options().max_batch_tokens),
      max_num_seqs_(options_.max_num_seqs > 0 ? options_.max_num_seqs : runner.options().max_num_seqs) {
  // The model's scratch is sized for the runner's step; never plan more.
  max_batch_tokens_ = std::min<int64_t>(max_batch_tokens_, runner.options().max_batch_tokens);
  max_num_seqs_ = std::max<int64_t>(max_num_seqs_, 1);
  PublishGauges();
}

StepScheduler::~StepScheduler() {
  for (auto& s : running_) s->kv.Release(runner_.kv_allocator());
  for (auto& s : waiting_) s->kv.Release(runner_.kv_allocator());
}

absl::Status StepScheduler::Validate(const SequenceRequest& request) const {
  if (!request.on_event) return absl::InvalidArgumentError("request has no event callback");
  if (request.prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  const ModelConfig& config = runner_.config();
  const int64_t vocab = config.vocab_size;
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    const int32_t t = request.prompt[i];
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", t, " at position ", i,
                                                     " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (absl::Status s = request.params.Validate(static_cast<int32_t>(vocab)); !s.ok()) return s;
  if (absl::StatusOr<float> density = runner_.ResolveDensity(request.density); !density.ok()) {
    return density.status();
  }
  if (request.top_logprobs < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_logprobs ", request.top_logprobs, " < 0"));
  }
  const int64_t total = static_cast<int64_t>(request.prompt.size()) + request.params.max_tokens;
  if (total > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", request.prompt.size(), " tokens plus max_tokens ", request.params.max_tokens,
        " exceeds the model's context of ", config.max_position_embeddings, " positions"));
  }
  const int64_t block_size = runner_.kv_layout().block_size;
  const int64_t blocks = (total + block_size - 1) / block_size;
  if (blocks > total_kv_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "prompt + max_tokens = ", total, " tokens need ", blocks, " KV blocks but the whole cache has ",
        total_kv_blocks(), "; raise --kv-cache-bytes or lower max_tokens"));
  }
  return absl::OkStatus();
}

void StepScheduler::Add(SequenceRequest request) {
  if (absl::Status status = Validate(request); !status.ok()) {
    counters_.finished[static_cast<int>(FinishReason::kError)].fetch_add(1, std::memory_order_relaxed);
    TokenEvent event;
    event.id = request.id;
    event.finished = true;
    event.finish_reason = FinishReason::kError;
    event.status = std::move(status);
    event.prompt_tokens = static_cast<int32_t>(request.prompt.size());
    if (request.on_event) request.on_event(event);
    return;
  }
  if (request.submit_time == absl::InfinitePast()) request.submit_time = Now();
  request.density = *runner_.ResolveDensity(request.density);  // Validate checked it
  std::vector<int32_t> eog = request.end_of_generation_ids.has_value()
                                 ? std::move(*request.end_of_generation_ids)
                                 : options_.end_of_generation_ids;
  waiting_.push_back(
      std::make_unique<Sequence>(std::move(request), std::move(eog), runner_.kv_layout().block_size));
  PublishGauges();
}

bool StepScheduler::Cancel(uint64_t id) {
  auto matches = [id](const std::unique_ptr<Sequence>& s) { return s->id() == id && !s->done; };
  Sequence* found = nullptr;
  if (auto it = std::find_if(running_.begin(), running_.end(), matches); it != running_.end()) {
    found = it->get();
  } else if (auto w = std::find_if(waiting_.begin(), waiting_.end(), matches); w != waiting_.end()) {
    found = w->get();
  }
  if (found == nullptr) return false;
  Finish(*found, FinishReason::kCancelled, absl::CancelledError("cancelled"));
  RemoveDone();
  return true;
}

void StepScheduler::CancelAll(const absl::Status& status) {
  for (auto& s : running_) Finish(*s, FinishReason::kCancelled, status);
  for (auto& s : waiting_) Finish(*s, FinishReason::kCancelled, status);
  RemoveDone();
}

void StepScheduler::ExpireDeadlines() {
  const absl::Time now = Now();
  auto expire = [&](Sequence& s) {
    if (!s.done && now >= s.request.deadline) {
      Finish(s, FinishReason::kDeadline,
             absl::DeadlineExceededError(absl::StrCat("deadline passed after ", s.generated,
                                                      " generated tokens")));
    }
  };
  for (auto& s : running_) expire(*s);
  for (auto& s : waiting_) expire(*s);
  RemoveDone();
}

void StepScheduler::PreemptYoungest() {
  std::unique_ptr<Sequence> victim = std::move(running_.back());
  running_.pop_back();
  for (Planned& p : plan_) {
    if (p.seq == victim.get()) {
      budget_ += p.take;
      p.take = 0;
    }
  }
  counters_.recomputed_tokens.fetch_add(victim->kv.length(), std::memory_order_relaxed);
  counters_.preemptions.fetch_add(1, std::memory_order_relaxed);
  ++victim->preemptions;
  victim->kv.Release(runner_.kv_allocator());
  waiting_.push_front(std::move(victim));
}

void StepScheduler::PlanOne(Sequence& s, bool& preempted) {
  if (budget_ <= 0 || s.done) return;
  const int64_t take = std::min(s.pending(), budget_);
  while (!s.kv.Reserve(runner_.kv_allocator(), s.kv.length() + take)) {
    const bool self = running_.back().get() == &s;
    PreemptYoungest();
    preempted = true;
    if (self) return;  // it was the youngest: it waits to be recomputed
  }
  plan_.push_back(Planned{&s, static_cast<int32_t>(take)});
  budget_ -= take;
}

bool StepScheduler::PlanRunning() {
  bool preempted = false;
  // Decode tokens first (one token each, latency-critical), then the
  // unfinished prefill chunks, both oldest first. Index loops: preemption
  // removes sequences from the back.
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i]->decoding()) PlanOne(*running_[i], preempted);
  }
  for (size_t i = 0; i < running_.size(); ++i) {
    if (!running_[i]->decoding()) PlanOne(*running_[i], preempted);
  }
  return preempted;
}

void StepScheduler::AdmitWaiting() {
  while (!waiting_.empty() && num_running() < max_num_seqs_ && budget_ > 0) {
    Sequence& s = *waiting_.front();
    const int64_t take = std::min(s.pending(), budget_);
    // First come, first served: a head that does not fit blocks the rest.
    if (!s.kv.Reserve(runner_.kv_allocator(), s.kv.length() + take)) break;
    if (!s.admitted_once) {
      s.admitted_once = true;
      started_.push_back(&s);
      counters_.prompt_tokens.fetch_add(s.prompt_len, std::memory_order_relaxed);
    }
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    plan_.push_back(Planned{&s, static_cast<int32_t>(take)});
    budget_ -= take;
  }
}

bool StepScheduler::Step() {
  ExpireDeadlines();
  if (idle()) {
    PublishGauges();
    return false;
  }
  plan_.clear();
  started_.clear();
  budget_ = max_batch_tokens_;
  // A step that had to preempt admits nobody: the pool is short already.
  if (!PlanRunning()) AdmitWaiting();
  PublishGauges();  // events of this step see who runs in it
  if (!started_.empty()) {
    const absl::Time now = Now();
    event_.token = -1;
    event_.logprob = 0.0f;
    event_.top_logprobs.clear();
    event_.finished = false;
    event_.status = absl::OkStatus();
    for (Sequence* s : started_) {
      event_.started = true;
      event_.queue_seconds = std::max(0.0, absl::ToDoubleSeconds(now - s->request.submit_time));
      Deliver(*s);
    }
    event_.started = false;
    event_.queue_seconds = 0.0;
  }

  runner_.ClearStep();
  logit_owners_.clear();
  int64_t seqs = 0, decode_seqs = 0, prefill_tokens = 0;
  for (const Planned& p : plan_) {
    if (p.take == 0) continue;
    Sequence& s = *p.seq;
    const bool decode = s.decoding();
    const bool completes = p.take == s.pending();
    absl::Status status = runner_.AddToStep(
        s.kv, std::span<const int32_t>(s.tokens).subspan(s.kv.length(), p.take), completes, s.density);
    if (!status.ok()) {  // the plan reserved the blocks: a bug, but this sequence's alone
      Finish(s, FinishReason::kError, std::move(status));
      continue;
    }
    ++seqs;
    decode_seqs += decode ? 1 : 0;
    prefill_tokens += decode ? 0 : p.take;
    if (completes) logit_owners_.push_back(&s);
  }
  if (runner_.step().num_tokens() == 0) {
    if (!idle()) {
      // Unreachable while every sequence fits the pool alone (Validate);
      // failing everything beats spinning forever.
      const absl::Status stuck = absl::InternalError("scheduler could not fit any sequence into a step");
      for (auto& s : running_) Finish(*s, FinishReason::kError, stuck);
      for (auto& s : waiting_) Finish(*s, FinishReason::kError, stuck);
    }
    RemoveDone();
    PublishGauges();
    return true;
  }

  const auto start = std::chrono::steady_clock::now();
  const int64_t generated_before = counters_.generated_tokens.load(std::memory_order_relaxed);
  absl::Status status = runner_.RunStep(logits_);
  if (status.ok()) {
    SampleAndReport();
  } else {
    for (const Planned& p : plan_) {
      if (p.take > 0 && !p.seq->done) Finish(*p.seq, FinishReason::kError, status);
    }
  }
  const int64_t nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now() - start)
                            .count();
  const StepPhase phase = decode_seqs == seqs ? StepPhase::kDecode
                          : decode_seqs == 0  ? StepPhase::kPrefill
                                              : StepPhase::kMixed;
  const int p = static_cast<int>(phase);
  counters_.steps[p].fetch_add(1, std::memory_order_relaxed);
  counters_.step_nanos[p].fetch_add(nanos, std::memory_order_relaxed);
  counters_.batch_seqs_total.fetch_add(seqs, std::memory_order_relaxed);
  counters_.batch_tokens_total.fetch_add(runner_.step().num_tokens(), std::memory_order_relaxed);
  counters_.last_batch_seqs.store(seqs, std::memory_order_relaxed);
  if (options_.on_step) {
    const int64_t num_tokens = runner_.step().num_tokens();
    step_stats_.phase = phase;
    step_stats_.seconds = static_cast<double>(nanos) * 1e-9;
    step_stats_.num_seqs = static_cast<int32_t>(seqs);
    step_stats_.num_tokens = static_cast<int32_t>(num_tokens);
    step_stats_.prefill_tokens = static_cast<int32_t>(prefill_tokens);
    step_stats_.decode_tokens = static_cast<int32_t>(num_tokens - prefill_tokens);
    step_stats_.sampled_tokens = static_cast<int32_t>(
        counters_.generated_tokens.load(std::memory_order_relaxed) - generated_before);
    options_.on_step(step_stats_);
  }
  RemoveDone();
  PublishGauges();
  return true;
}

void StepScheduler::SampleAndReport() {
  const int64_t vocab = runner_.config().vocab_size;
  const int64_t max_positions = runner_.config().max_position_embeddings;
  for (size_t row = 0; row < logit_owners_.size(); ++row) {
    Sequence& s = *logit_owners_[row];
    std::span<float> row_logits(logits_.data() + row * vocab, vocab);
    int32_t token;
    if (s.request.logprobs || s.request.top_logprobs > 0) {
      SampleOutput out = s.sampler.SampleWithLogprobs(row_logits, s.tokens, s.request.top_logprobs);
      token = out.token;
      event_.logprob = out.logprob;
      event_.top_logprobs.swap(out.top_logprobs);
    } else {
      token = s.sampler.Sample(row_logits, s.tokens);
      event_.logprob = 0.0f;
      event_.top_logprobs.clear();
    }
    s.tokens.push_back(token);
    ++s.generated;
    counters_.generated_tokens.fetch_add(1, std::memory_order_relaxed);
    event_.token = token;
    if (IsStopToken(s.request.params, s.eog_ids, token)) {
      Finish(s, FinishReason::kStop, absl::OkStatus(), /*with_token=*/true);
    } else if (s.generated >= s.request.params.max_tokens ||
               static_cast<int64_t>(s.tokens.size()) >= max_positions) {
      Finish(s, FinishReason::kLength, absl::OkStatus(), /*with_token=*/true);
    } else {
      event_.finished = false;
      event_.status = absl::OkStatus();
      Deliver(s);
    }
  }
}

void StepScheduler::Finish(Sequence& s, FinishReason reason, absl::Status status, bool with_token) {
  if (s.done) return;
  s.kv.Release(runner_.kv_allocator());
  s.done = true;
  ++done_unremoved_;
  counters_.finished[static_cast<int>(reason)].fetch_add(1, std::memory_order_relaxed);
  // Gauges first: whoever reacts to this event sees the blocks free already.
  PublishGauges();
  if (!with_token) {
    event_.token = -1;
    event_.logprob = 0.0f;
    event_.top_logprobs.clear();
  }
  event_.finished = true;
  event_.finish_reason = reason;
  event_.status = std::move(status);
  Deliver(s);
}

void StepScheduler::Deliver(Sequence& s) {
  event_.id = s.id();
  event_.prompt_tokens = s.prompt_len;
  event_.generated_tokens = s.generated;
  event_.preemptions = s.preemptions;
  s.request.on_event(event_);
}

void StepScheduler::RemoveDone() {
  if (done_unremoved_ == 0) return;
  auto done = [](const std::unique_ptr<Sequence>& s) { return s->done; };
  std::erase_if(running_, done);
  std::erase_if(waiting_, done);
  done_unremoved_ = 0;
  PublishGauges();
}

void StepScheduler::PublishGauges() {
  int64_t running = 0, waiting = 0;
  for (const auto& s : running_) running += s->done ? 0 : 1;
  for (const auto& s : waiting_) waiting += s->done ? 0 : 1;
  counters_.running.store(running, std::memory_order_relaxed);
  counters_.waiting.store(waiting, std::memory_order_relaxed);
  counters_.free_kv_blocks.store(runner_.kv_allocator().num_free(), std::memory_order_relaxed);
  if (running > counters_.peak_running.load(std::memory_order_relaxed)) {
    counters_.peak_running.store(running, std::memory_order_relaxed);
  }
}

// ---- Scheduler: the engine thread ----

Scheduler::Scheduler(ModelRunner& runner, SchedulerOptions options)
    : runner_(runner), options_now_(options.now), core_(runner, std::move(options)) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kIdle) return;
  state_ = State::kRunning;
  thread_ = std::thread([this] { Loop(); });
}

absl::Status Scheduler::Submit(SequenceRequest request) {
  if (absl::Status s = core_.Validate(request); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (state_ != State::kIdle && state_ != State::kRunning) {
    return absl::UnavailableError("the engine is shutting down");
  }
  if (request.submit_time == absl::InfinitePast()) {
    request.submit_time = options_now_ ? options_now_() : absl::Now();
  }
  if (!live_ids_.insert(request.id).second) {
    return absl::AlreadyExistsError(absl::StrCat("sequence id ", request.id, " is already in flight"));
  }
  // Forget the id at its final event, so it may be reused and Cancel of a
  // finished sequence is a no-op.
  request.on_event = [this, id = request.id, sink = std::move(request.on_event)](const TokenEvent& e) {
    if (e.finished) {
      absl::MutexLock l(&mu_);
      live_ids_.erase(id);
    }
    sink(e);
  };
  inbox_.push_back(std::move(request));
  return absl::OkStatus();
}

void Scheduler::Cancel(uint64_t id) {
  absl::MutexLock lock(&mu_);
  if (live_ids_.contains(id)) cancels_.push_back(id);
}

LoadReport Scheduler::Load() const {
  const SchedulerCounters& c = core_.counters();
  LoadReport report;
  report.running = c.running.load(std::memory_order_relaxed);
  report.waiting = c.waiting.load(std::memory_order_relaxed);
  report.free_kv_blocks = c.free_kv_blocks.load(std::memory_order_relaxed);
  report.total_kv_blocks = core_.total_kv_blocks();
  absl::MutexLock lock(&mu_);
  report.waiting += static_cast<int64_t>(inbox_.size());
  return report;
}

void Scheduler::Loop() {
  runner_.BindThreadCount();
  std::vector<SequenceRequest> arrivals;
  std::vector<uint64_t> cancels;
  while (true) {
    const bool idle = core_.idle();
    State state;
    {
      absl::MutexLock lock(&mu_);
      // Only mu_-guarded state in the condition: absl may evaluate it on
      // the thread that unlocks.
      auto has_news = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !inbox_.empty() || !cancels_.empty() || state_ != State::kRunning;
      };
      if (idle) mu_.Await(absl::Condition(&has_news));
      arrivals.swap(inbox_);
      cancels.swap(cancels_);
      state = state_;
    }
    for (SequenceRequest& r : arrivals) core_.Add(std::move(r));
    arrivals.clear();
    for (uint64_t id : cancels) core_.Cancel(id);
    cancels.clear();
    if (state == State::kStopping) {
      core_.CancelAll(absl::CancelledError("the engine stopped"));
      return;
    }
    // Draining accepts nothing new, so an idle core after taking the inbox
    // means all accepted work is done.
    if (state == State::kDraining && core_.idle()) return;
    core_.Step();
  }
}

void Scheduler::Shutdown(State target) {
  std::vector<SequenceRequest> never_started;
  {
    absl::MutexLock lock(&mu_);
    switch (state_) {
      case State::kStopped:
        return;
      case State::kIdle:
        if (target == State::kDraining) {
          state_ = State::kDraining;
          thread_ = std::thread([this] { Loop(); });
        } else {
          never_started.swap(inbox_);
          state_ = State::kStopping;
        }
        break;
      case State::kRunning:
      case State::kDraining:
        if (state_ == State::kRunning || target == State::kStopping) state_ = target;
        break;
      case State::kStopping:
        break;
    }
  }
  // The engine never ran: these requests end here, with their one final event.
  for (SequenceRequest& r : never_started) {
    TokenEvent event;
    event.id = r.id;
    event.finished = true;
    event.finish_reason = FinishReason::kCancelled;
    event.status = absl::CancelledError("the engine stopped before it started");
    event.prompt_tokens = static_cast<int32_t>(r.prompt.size());
    r.on_event(event);
  }
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  state_ = State::kStopped;
}

void Scheduler::Drain() { Shutdown(State::kDraining); }

void Scheduler::Stop() { Shutdown(State::kStopping); }

}  // namespace polar
