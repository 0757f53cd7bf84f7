// Continuous batching: sequences join and leave the running batch at step
// boundaries.
//
// StepScheduler is the policy and the step loop body, single-threaded: each
// Step() (1) ends sequences whose deadline passed, (2) packs the step: running
// sequences first (decode tokens, then unfinished prefill chunks), then
// waiting ones first-come-first-served while the token budget
// (max_batch_tokens), the running cap (max_num_seqs) and the KV pool allow,
// with long prompts prefilled in chunks; (3) runs the forward pass; (4) samples
// and reports tokens and finishes through each sequence's event callback.
// When a running sequence needs a KV block and none is free, the most
// recently admitted running sequence is preempted: its blocks are released
// and it goes back to the front of the waiting queue with its generated tokens
// kept after its prompt, to be recomputed by prefill later. Its sampler (and
// so its random stream) stays with it, so preemption never changes a
// sequence's output. Admission checks that every sequence fits the pool alone
// (prompt + max_tokens), so the oldest running sequence always progresses:
// no crash, no deadlock. A finished, cancelled or expired sequence releases
// its blocks before its final event is delivered.
//
// Observability costs the step nothing it would notice: a sequence's first
// admission is reported by one `started` event (token -1) carrying its queue
// time, before that step's forward pass, so a chunked prefill is seen as
// started at once; every event carries the sequence's preemption count; and
// SchedulerOptions::on_step, when set, is told each step's phase, duration and
// sizes on the engine thread, from a reused struct (no allocation).
//
// Scheduler runs a StepScheduler on its own engine thread, which alone
// touches the model runner and backend. Other threads (gRPC handlers) only
// Submit, Cancel and read Load()/counters(): those post to the loop under a
// mutex or read atomics, and take effect at the next step boundary.
//
// ModelRunner::Generate drives a StepScheduler synchronously, so the CLI and
// the server share one implementation of packing, admission and preemption.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/runtime/kv_cache.h"
#include "engine/runtime/model_runner.h"
#include "engine/runtime/sampler.h"

namespace polar {

// One event of one sequence, delivered on the thread that runs the steps.
// A token event has token >= 0; the event that ends a sequence has
// finished = true and, when the sequence ended by sampling (stop token or
// length), carries that last token too. Every accepted sequence gets exactly
// one finished event.
struct TokenEvent {
  uint64_t id = 0;
  int32_t token = -1;  // -1: no new token in this event
  // Filled when the request asked for logprobs (see SampleOutput for which
  // distribution they come from).
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kLength;
  // OK for kLength/kStop; CANCELLED, DEADLINE_EXCEEDED or the error otherwise.
  absl::Status status;
  int32_t prompt_tokens = 0;     // the request's prompt length
  int32_t generated_tokens = 0;  // tokens generated so far, including this one
  // True on exactly one event: the one sent when the sequence first joins a
  // running batch (token -1, not finished), before that step runs. A sequence
  // that ends before ever running (cancelled, expired, invalid) never gets one.
  bool started = false;
  // On the started event: admission time minus submit time (the time spent
  // in the inbox and the waiting queue), by the scheduler's clock.
  double queue_seconds = 0.0;
  // Times the sequence has been preempted so far (final on the finished event).
  int32_t preemptions = 0;
};

struct SequenceRequest {
  uint64_t id = 0;  // unique among the scheduler's live sequences
  std::vector<int32_t> prompt;
  SamplingParams params;
  // End-of-generation ids; nullopt: the scheduler's (SchedulerOptions).
  std::optional<std::vector<int32_t>> end_of_generation_ids;
  absl::Time deadline = absl::InfiniteFuture();
  // When the request entered the scheduler, for TokenEvent::queue_seconds;
  // InfinitePast: stamped by Scheduler::Submit or StepScheduler::Add.
  absl::Time submit_time = absl::InfinitePast();
  // Polar Sparsity: the fraction of KV groups each decode step attends with,
  // in (0, 1]; 0: the model's calibrated default (1 without routers).
  float density = 0.0f;
  bool logprobs = false;     // report the chosen token's logprob
  int32_t top_logprobs = 0;  // and the n most likely alternatives (implies logprobs)
  // Called on the engine thread; must be cheap and must not block (enqueue
  // and return). It may call Scheduler::Cancel, but not StepScheduler methods.
  std::function<void(const TokenEvent&)> on_event;
};

enum class StepPhase { kPrefill = 0, kDecode = 1, kMixed = 2 };
inline constexpr int kNumStepPhases = 3;
const char* StepPhaseName(StepPhase phase);  // "prefill", "decode", "mixed"

// What one engine step did, for SchedulerOptions::on_step.
struct StepStats {
  // kDecode: every sequence fed one sampled token; kPrefill: none did
  // (prompt chunks or recomputation after preemption); kMixed: both.
  StepPhase phase = StepPhase::kDecode;
  double seconds = 0.0;  // forward pass + sampling + event delivery
  int32_t num_seqs = 0;    // sequences in the forward pass
  int32_t num_tokens = 0;  // tokens in the forward pass = prefill + decode
  int32_t prefill_tokens = 0;  // of prompt chunks and recomputation
  int32_t decode_tokens = 0;   // sampled tokens fed back, one per decoding sequence
  int32_t sampled_tokens = 0;  // tokens sampled (generated) by this step
};

struct SchedulerOptions {
  int32_t max_batch_tokens = 0;  // per-step token budget; 0: the runner's
  int32_t max_num_seqs = 0;      // running cap; 0: the runner's
  std::vector<int32_t> end_of_generation_ids;
  // Clock for deadlines (tests inject one); null: absl::Now.
  std::function<absl::Time()> now;
  // Called on the engine thread after every step that ran a forward pass
  // (also when the pass failed). Must be cheap and must not block or call
  // into the scheduler: it runs inside the step loop.
  std::function<void(const StepStats&)> on_step;
};

// Counters and gauges for metrics, written by the engine thread with relaxed
// atomics and readable from any thread without stopping the loop.
struct SchedulerCounters {
  std::atomic<int64_t> steps[kNumStepPhases] = {};
  std::atomic<int64_t> step_nanos[kNumStepPhases] = {};  // forward + sampling time
  std::atomic<int64_t> batch_seqs_total{0};    // sum over steps of sequences per step
  std::atomic<int64_t> batch_tokens_total{0};  // sum over steps of tokens per step
  std::atomic<int64_t> last_batch_seqs{0};
  std::atomic<int64_t> prompt_tokens{0};       // prompt tokens of admitted requests
  std::atomic<int64_t> recomputed_tokens{0};   // tokens prefilled again after preemption
  std::atomic<int64_t> generated_tokens{0};
  std::atomic<int64_t> preemptions{0};
  std::atomic<int64_t> finished[5] = {};       // by FinishReason
  // Gauges, updated before any event that depends on them is delivered.
  std::atomic<int64_t> running{0};
  std::atomic<int64_t> waiting{0};
  std::atomic<int64_t> free_kv_blocks{0};
  std::atomic<int64_t> peak_running{0};  // high-water mark of `running`
};

struct LoadReport {
  int64_t running = 0;
  // Accepted, not running (submitted, queued or preempted). A request moving
  // from the inbox to the engine may be missed for an instant: a snapshot.
  int64_t waiting = 0;
  int64_t free_kv_blocks = 0;
  int64_t total_kv_blocks = 0;
};

class StepScheduler {
 public:
  StepScheduler(ModelRunner& runner, SchedulerOptions options);
  // Releases the blocks of any sequence still held (without events).
  ~StepScheduler();
  StepScheduler(const StepScheduler&) = delete;
  StepScheduler& operator=(const StepScheduler&) = delete;

  // Checks a request against the model and the pool; safe from any thread.
  // INVALID_ARGUMENT: no callback, empty prompt, ids outside the vocabulary,
  // bad sampling parameters, prompt + max_tokens beyond the model's positions.
  // RESOURCE_EXHAUSTED: prompt + max_tokens needs more KV blocks than the
  // whole pool holds.
  absl::Status Validate(const SequenceRequest& request) const;
  // Queues a request; one that fails Validate gets its error as a finished
  // event at once.
  void Add(SequenceRequest request);
  // Ends a running or waiting sequence with kCancelled and frees its blocks
  // before delivering that event; false if no such sequence.
  bool Cancel(uint64_t id);
  // Ends every sequence with kCancelled and `status`.
  void CancelAll(const absl::Status& status);
  // One step; false when there was nothing to run.
  bool Step();

  bool idle() const { return running_.empty() && waiting_.empty(); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  const SchedulerCounters& counters() const { return counters_; }
  int64_t total_kv_blocks() const { return runner_.kv_allocator().num_blocks(); }

 private:
  struct Sequence;
  struct Planned {
    Sequence* seq;
    int32_t take;  // tokens of this sequence in the step; 0: dropped (preempted)
  };

  void ExpireDeadlines();
  // Plans the running sequences' tokens (decode first, then prefill chunks),
  // preempting when blocks run out; true if anything was preempted.
  bool PlanRunning();
  void PlanOne(Sequence& seq, bool& preempted);
  void AdmitWaiting();
  // Preempts the youngest running sequence, dropping it from the plan.
  void PreemptYoungest();
  void SampleAndReport();
  // Releases the blocks, then delivers the final event (carrying the token
  // already in event_ when with_token).
  void Finish(Sequence& seq, FinishReason reason, absl::Status status, bool with_token = false);
  void RemoveDone();
  void PublishGauges();
  absl::Time Now() const { return options_.now ? options_.now() : absl::Now(); }
  // Fills event_'s per-sequence fields and calls the sequence's callback.
  void Deliver(Sequence& seq);

  ModelRunner& runner_;
  SchedulerOptions options_;
  int64_t max_batch_tokens_;
  int64_t max_num_seqs_;
  SchedulerCounters counters_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;  // in admission order: youngest last
  // Per-step scratch, reused so a step allocates nothing once warm.
  std::vector<Planned> plan_;
  int64_t budget_ = 0;          // tokens left in the step being planned
  int64_t done_unremoved_ = 0;  // finished sequences not yet erased
  std::vector<Sequence*> logit_owners_;
  std::vector<Sequence*> started_;  // admitted for the first time this step
  StepStats step_stats_;
  std::vector<float> logits_;
  TokenEvent event_;
};

class Scheduler {
 public:
  // `runner` must outlive the scheduler and must not be used by anyone else
  // between Start() and the end of Drain()/Stop().
  Scheduler(ModelRunner& runner, SchedulerOptions options);
  ~Scheduler();  // Stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Starts the engine thread (once).
  void Start();
  // Thread-safe. Validates (the errors of StepScheduler::Validate, plus
  // ALREADY_EXISTS for a live id and UNAVAILABLE once draining or stopped)
  // and queues the request for the next step boundary. An accepted request
  // gets exactly one finished event.
  absl::Status Submit(SequenceRequest request);
  // Thread-safe; cancels at the next step boundary (its blocks are free
  // before its finished event). Unknown or finished ids are ignored.
  void Cancel(uint64_t id);
  // Thread-safe snapshot.
  LoadReport Load() const;
  const SchedulerCounters& counters() const { return core_.counters(); }
  // Stops accepting work, finishes everything accepted, then stops the
  // engine thread. Starts it first if it never ran.
  void Drain();
  // Stops accepting work, cancels everything in flight (kCancelled events)
  // and stops the engine thread.
  void Stop();

 private:
  enum class State { kIdle, kRunning, kDraining, kStopping, kStopped };
  void Loop();
  void Shutdown(State state);

  ModelRunner& runner_;
  std::function<absl::Time()> options_now_;  // the options' clock, for submit times
  StepScheduler core_;  // engine thread only (after Start)
  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kIdle;
  std::vector<SequenceRequest> inbox_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> cancels_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> live_ids_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace polar
