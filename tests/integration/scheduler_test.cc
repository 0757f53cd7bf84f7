// The continuous-batching scheduler on real checkpoints (tiny committed models
// and, when fetched, the default model): requests that arrive while others
// run, from several threads, produce exactly what they produce alone (greedy
// and seeded sampling); a KV pool too small for everyone preempts and still
// changes no output; cancel and deadline end a sequence and free its blocks;
// an oversized request fails cleanly while others complete; the running cap
// holds; Drain finishes in-flight work and Stop ends every sequence.
//
// Synchronisation is by events (callbacks signal, tests wait); where a test
// needs the engine to be at a known point, an event callback blocks on a
// notification the test thread gives after acting, which makes the order
// deterministic. Waits have a generous timeout so a bug fails instead of
// hanging.
#include "engine/runtime/scheduler.h"

#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/integration/runner_test_util.h"

namespace polar {
namespace {

constexpr absl::Duration kWaitLimit = absl::Minutes(10);

std::string TinyModel(const char* name) { return std::string(POLAR_TEST_DATA_DIR) + "/models/" + name; }

std::unique_ptr<ModelRunner> Open(const std::string& path, RunnerOptions options = {}) {
  return testing::OpenRunner(path, options);
}

// Collects the events of many sequences; thread-safe.
class Collector {
 public:
  struct Outcome {
    std::vector<int32_t> tokens;
    int finished_events = 0;
    FinishReason reason = FinishReason::kLength;
    absl::Status status;
    int started_events = 0;
    bool token_before_started = false;
    double queue_seconds = -1.0;
    int32_t final_preemptions = -1;  // from the finished event
  };

  std::function<void(const TokenEvent&)> Sink() {
    return [this](const TokenEvent& e) {
      absl::MutexLock lock(&mu_);
      Outcome& o = outcomes_[e.id];
      if (e.started) {
        ++o.started_events;
        o.queue_seconds = e.queue_seconds;
        EXPECT_EQ(e.token, -1);
        EXPECT_FALSE(e.finished);
      }
      if (e.token >= 0) {
        o.tokens.push_back(e.token);
        if (o.started_events == 0) o.token_before_started = true;
      }
      if (e.finished) {
        o.final_preemptions = e.preemptions;
        ++o.finished_events;
        o.reason = e.finish_reason;
        o.status = e.status;
        ++finished_;
      }
    };
  }
  // Waits until `n` sequences have finished; false on timeout.
  bool WaitFinished(int n) {
    absl::MutexLock lock(&mu_);
    auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finished_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), kWaitLimit);
  }
  Outcome Get(uint64_t id) {
    absl::MutexLock lock(&mu_);
    return outcomes_[id];
  }

 private:
  absl::Mutex mu_;
  std::map<uint64_t, Outcome> outcomes_ ABSL_GUARDED_BY(mu_);
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
};

// Prompts of different lengths (some longer than the step budget, so they are
// prefilled in chunks), greedy and seeded sampling with every sampler knob.
std::vector<GenerationRequest> MixedRequests(int64_t vocab, int n, int max_prompt, int max_tokens,
                                             uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab) - 1);
  std::uniform_int_distribution<int32_t> prompt_len(1, max_prompt);
  std::vector<GenerationRequest> requests(n);
  for (int i = 0; i < n; ++i) {
    GenerationRequest& r = requests[i];
    const int len = prompt_len(rng);
    for (int t = 0; t < len; ++t) r.prompt.push_back(token(rng));
    r.params.max_tokens = max_tokens - (i % 3) * 2;
    r.params.ignore_eos = true;
    r.params.seed = 1000 + i;
    r.params.temperature = i % 2 == 0 ? 0.0f : 0.9f;
    r.params.top_k = i % 4 == 1 ? 16 : 0;
    r.params.top_p = i % 4 == 3 ? 0.85f : 1.0f;
    r.params.repetition_penalty = i % 5 == 2 ? 1.2f : 1.0f;
  }
  return requests;
}

std::vector<std::vector<int32_t>> RunEachAlone(ModelRunner& runner, const std::vector<GenerationRequest>& requests) {
  std::vector<std::vector<int32_t>> outputs;
  for (const GenerationRequest& r : requests) {
    absl::StatusOr<std::vector<GenerationResult>> alone = runner.Generate(std::span(&r, 1), {});
    EXPECT_TRUE(alone.ok()) << alone.status();
    outputs.push_back(alone.ok() ? (*alone)[0].tokens : std::vector<int32_t>{});
  }
  return outputs;
}

SequenceRequest ToSequence(uint64_t id, const GenerationRequest& r, std::function<void(const TokenEvent&)> sink) {
  SequenceRequest s;
  s.id = id;
  s.prompt = r.prompt;
  s.params = r.params;
  s.on_event = std::move(sink);
  return s;
}

// Half the requests start together; the rest are submitted from two threads
// once the first request has produced tokens, so they join a running batch.
void ExpectContinuousArrivalsEqualAlone(const std::string& path, int n, int max_prompt, int max_tokens) {
  RunnerOptions options;
  options.max_batch_tokens = 24;  // long prompts prefill in chunks beside decodes
  std::unique_ptr<ModelRunner> runner = Open(path, options);
  ASSERT_NE(runner, nullptr);
  const std::vector<GenerationRequest> requests =
      MixedRequests(runner->config().vocab_size, n, max_prompt, max_tokens, 7);
  const std::vector<std::vector<int32_t>> alone = RunEachAlone(*runner, requests);

  SchedulerOptions scheduler_options;
  scheduler_options.max_num_seqs = 4;
  Scheduler scheduler(*runner, scheduler_options);
  Collector collector;
  absl::Notification first_tokens;
  auto first_sink = collector.Sink();
  int seen = 0;  // engine thread only
  scheduler.Start();
  ASSERT_TRUE(scheduler
                  .Submit(ToSequence(0, requests[0],
                                     [&](const TokenEvent& e) {
                                       first_sink(e);
                                       if (++seen == 2) first_tokens.Notify();
                                     }))
                  .ok());
  for (int i = 1; i < n / 2; ++i) ASSERT_TRUE(scheduler.Submit(ToSequence(i, requests[i], collector.Sink())).ok());
  ASSERT_TRUE(first_tokens.WaitForNotificationWithTimeout(kWaitLimit));
  std::vector<std::thread> submitters;
  for (int t = 0; t < 2; ++t) {
    submitters.emplace_back([&, t] {
      for (int i = n / 2 + t; i < n; i += 2) {
        EXPECT_TRUE(scheduler.Submit(ToSequence(i, requests[i], collector.Sink())).ok());
      }
    });
  }
  for (std::thread& t : submitters) t.join();
  ASSERT_TRUE(collector.WaitFinished(n));
  for (int i = 0; i < n; ++i) {
    const Collector::Outcome o = collector.Get(i);
    EXPECT_EQ(o.finished_events, 1) << "request " << i;
    EXPECT_EQ(o.reason, FinishReason::kLength) << "request " << i << ": " << o.status;
    EXPECT_EQ(o.tokens, alone[i]) << "request " << i;
  }
  const LoadReport load = scheduler.Load();
  EXPECT_EQ(load.free_kv_blocks, load.total_kv_blocks);
  EXPECT_EQ(load.running + load.waiting, 0);
  EXPECT_EQ(scheduler.counters().generated_tokens.load(), [&] {
    int64_t total = 0;
    for (const auto& a : alone) total += static_cast<int64_t>(a.size());
    return total;
  }());
  scheduler.Stop();
}

TEST(SchedulerTest, ContinuousArrivalsEqualAloneTinyModels) {
  for (const char* name : {"tiny-llama", "tiny-opt"}) {
    SCOPED_TRACE(name);
    ExpectContinuousArrivalsEqualAlone(TinyModel(name), 10, 60, 14);
  }
}

TEST(SchedulerTest, ContinuousArrivalsEqualAloneDefaultModel) {
  if (!std::filesystem::exists(POLAR_DEFAULT_MODEL)) {
    GTEST_SKIP() << "default model not fetched (scripts/fetch-model): " << POLAR_DEFAULT_MODEL;
  }
  ExpectContinuousArrivalsEqualAlone(POLAR_DEFAULT_MODEL, 4, 30, 8);
}

TEST(SchedulerTest, PreemptionWhenKvRunsOutKeepsOutputs) {
  RunnerOptions options;
  options.block_size = 4;
  options.num_kv_blocks = 14;  // each request needs <= 10 blocks alone; six need far more
  options.max_batch_tokens = 16;
  std::unique_ptr<ModelRunner> runner = Open(TinyModel("tiny-llama"), options);
  ASSERT_NE(runner, nullptr);
  std::vector<GenerationRequest> requests = MixedRequests(runner->config().vocab_size, 6, 12, 24, 11);
  const std::vector<std::vector<int32_t>> alone = RunEachAlone(*runner, requests);

  // The step hook runs on the engine thread; read its sums after Drain joins it.
  struct StepTotals {
    int64_t steps = 0, seqs = 0, tokens = 0, sampled = 0, inconsistent = 0;
  } totals;
  SchedulerOptions scheduler_options;
  scheduler_options.on_step = [&totals](const StepStats& step) {
    ++totals.steps;
    totals.seqs += step.num_seqs;
    totals.tokens += step.num_tokens;
    totals.sampled += step.sampled_tokens;
    const bool consistent = step.num_seqs >= 1 && step.seconds >= 0.0 &&
                            step.prefill_tokens + step.decode_tokens == step.num_tokens &&
                            step.decode_tokens <= step.num_seqs && step.sampled_tokens <= step.num_seqs &&
                            (step.phase != StepPhase::kDecode || step.prefill_tokens == 0) &&
                            (step.phase != StepPhase::kPrefill || step.decode_tokens == 0);
    if (!consistent) ++totals.inconsistent;
  };
  Scheduler scheduler(*runner, scheduler_options);
  Collector collector;
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(scheduler.Submit(ToSequence(i, requests[i], collector.Sink())).ok());
  }
  scheduler.Start();
  ASSERT_TRUE(collector.WaitFinished(static_cast<int>(requests.size())));
  scheduler.Drain();
  EXPECT_GT(scheduler.counters().preemptions.load(), 0);
  RecordProperty("preemptions", static_cast<int>(scheduler.counters().preemptions.load()));
  EXPECT_GT(scheduler.counters().recomputed_tokens.load(), 0);
  int64_t preemptions = 0, generated = 0, fed_once = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const Collector::Outcome o = collector.Get(i);
    EXPECT_EQ(o.reason, FinishReason::kLength) << "request " << i << ": " << o.status;
    EXPECT_EQ(o.tokens, alone[i]) << "request " << i;
    // One started event, before any token, even for a preempted sequence.
    EXPECT_EQ(o.started_events, 1) << "request " << i;
    EXPECT_FALSE(o.token_before_started) << "request " << i;
    EXPECT_GE(o.queue_seconds, 0.0) << "request " << i;
    EXPECT_GE(o.final_preemptions, 0) << "request " << i;
    preemptions += o.final_preemptions;
    generated += static_cast<int64_t>(o.tokens.size());
    // Every prompt and generated token is fed once, except the last sampled one.
    fed_once += static_cast<int64_t>(requests[i].prompt.size() + o.tokens.size()) - 1;
  }
  EXPECT_EQ(preemptions, scheduler.counters().preemptions.load());

  // One on_step call per step, whose numbers add up to the counters and to
  // what the sequences saw: preempted work is fed again.
  int64_t steps = 0;
  for (int p = 0; p < kNumStepPhases; ++p) steps += scheduler.counters().steps[p].load();
  EXPECT_EQ(totals.steps, steps);
  EXPECT_EQ(totals.inconsistent, 0);
  EXPECT_EQ(totals.seqs, scheduler.counters().batch_seqs_total.load());
  EXPECT_EQ(totals.tokens, scheduler.counters().batch_tokens_total.load());
  EXPECT_EQ(totals.tokens, fed_once + scheduler.counters().recomputed_tokens.load());
  EXPECT_EQ(totals.sampled, generated);
  const LoadReport load = scheduler.Load();
  EXPECT_EQ(load.free_kv_blocks, load.total_kv_blocks);

  // The synchronous wrapper shares the code: the same batch through Generate
  // preempts too and matches as well.
  absl::StatusOr<std::vector<GenerationResult>> batched = runner->Generate(requests, {});
  ASSERT_TRUE(batched.ok()) << batched.status();
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ((*batched)[i].tokens, alone[i]) << "request " << i;
}

TEST(SchedulerTest, CancelFreesBlocksRunningAndWaiting) {
  std::unique_ptr<ModelRunner> runner = Open(TinyModel("tiny-llama"));
  ASSERT_NE(runner, nullptr);
  SchedulerOptions options;
  options.max_num_seqs = 1;  // the second request waits behind the first
  Scheduler scheduler(*runner, options);
  Collector collector;
  auto sink = collector.Sink();
  absl::Notification started, cancels_posted;
  int tokens = 0;  // engine thread only
  GenerationRequest r;
  r.prompt = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21};
  r.params.ignore_eos = true;
  r.params.max_tokens = 300;
  // Holds the engine after the first token until the test has posted both
  // cancels, so they land while one sequence runs and the other waits.
  ASSERT_TRUE(scheduler
                  .Submit(ToSequence(1, r,
                                     [&](const TokenEvent& e) {
                                       sink(e);
                                       if (++tokens == 1) {
                                         started.Notify();
                                         cancels_posted.WaitForNotification();
                                       }
                                     }))
                  .ok());
  ASSERT_TRUE(scheduler.Submit(ToSequence(2, r, sink)).ok());
  scheduler.Start();
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_EQ(scheduler.Load().running, 1);
  EXPECT_EQ(scheduler.Load().waiting, 1);
  EXPECT_LT(scheduler.Load().free_kv_blocks, scheduler.Load().total_kv_blocks);
  scheduler.Cancel(2);
  scheduler.Cancel(1);
  cancels_posted.Notify();
  ASSERT_TRUE(collector.WaitFinished(2));
  const Collector::Outcome running = collector.Get(1), waiting = collector.Get(2);
  EXPECT_EQ(running.reason, FinishReason::kCancelled);
  EXPECT_EQ(running.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(running.tokens.size(), 1u);  // cancelled at the next step boundary
  EXPECT_EQ(waiting.reason, FinishReason::kCancelled);
  EXPECT_TRUE(waiting.tokens.empty());
  const LoadReport load = scheduler.Load();
  EXPECT_EQ(load.free_kv_blocks, load.total_kv_blocks);
  EXPECT_EQ(load.running + load.waiting, 0);
  scheduler.Cancel(1);  // finished: ignored

  // Cancelling from the event callback itself (engine thread) works too, and
  // the id can be reused once finished.
  Collector again;
  auto again_sink = again.Sink();
  ASSERT_TRUE(scheduler
                  .Submit(ToSequence(1, r,
                                     [&](const TokenEvent& e) {
                                       again_sink(e);
                                       if (e.generated_tokens == 3) scheduler.Cancel(1);
                                     }))
                  .ok());
  ASSERT_TRUE(again.WaitFinished(1));
  EXPECT_EQ(again.Get(1).reason, FinishReason::kCancelled);
  EXPECT_EQ(again.Get(1).tokens.size(), 3u);
  EXPECT_EQ(scheduler.Load().free_kv_blocks, scheduler.Load().total_kv_blocks);
}

TEST(SchedulerTest, DeadlineEndsRunningAndWaitingSequences) {
  std::unique_ptr<ModelRunner> runner = Open(TinyModel("tiny-llama"));
  ASSERT_NE(runner, nullptr);
  std::atomic<int64_t> now_s{0};  // a fake clock the event callback advances
  SchedulerOptions options;
  options.max_num_seqs = 1;
  options.now = [&] { return absl::FromUnixSeconds(now_s.load()); };
  Scheduler scheduler(*runner, options);
  Collector collector;
  auto sink = collector.Sink();
  GenerationRequest r;
  r.prompt = {3, 1, 4, 1, 5, 9, 2, 6};
  r.params.ignore_eos = true;
  r.params.max_tokens = 200;
  SequenceRequest first = ToSequence(1, r, [&](const TokenEvent& e) {
    sink(e);
    if (e.generated_tokens == 4) now_s = 100;  // time passes during the fourth step
  });
  first.deadline = absl::FromUnixSeconds(50);
  SequenceRequest second = ToSequence(2, r, sink);  // waits behind the first (cap 1)
  second.deadline = absl::FromUnixSeconds(60);
  SequenceRequest third = ToSequence(3, r, sink);   // no deadline: runs to the end
  third.params.max_tokens = 5;
  ASSERT_TRUE(scheduler.Submit(std::move(first)).ok());
  ASSERT_TRUE(scheduler.Submit(std::move(second)).ok());
  ASSERT_TRUE(scheduler.Submit(std::move(third)).ok());
  scheduler.Start();
  ASSERT_TRUE(collector.WaitFinished(3));
  EXPECT_EQ(collector.Get(1).reason, FinishReason::kDeadline);
  EXPECT_EQ(collector.Get(1).status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(collector.Get(1).tokens.size(), 4u);
  EXPECT_EQ(collector.Get(2).reason, FinishReason::kDeadline);
  EXPECT_TRUE(collector.Get(2).tokens.empty());
  EXPECT_EQ(collector.Get(3).reason, FinishReason::kLength);
  EXPECT_EQ(collector.Get(3).tokens.size(), 5u);
  EXPECT_EQ(scheduler.Load().free_kv_blocks, scheduler.Load().total_kv_blocks);
  // Queue time is admission minus submission by the scheduler's clock: the
  // first ran at once, the second never ran (no started event), the third was
  // admitted once the clock read 100 s.
  EXPECT_EQ(collector.Get(1).started_events, 1);
  EXPECT_EQ(collector.Get(1).queue_seconds, 0.0);
  EXPECT_EQ(collector.Get(2).started_events, 0);
  EXPECT_EQ(collector.Get(3).started_events, 1);
  EXPECT_EQ(collector.Get(3).queue_seconds, 100.0);
  EXPECT_EQ(collector.Get(3).final_preemptions, 0);
  EXPECT_EQ(scheduler.counters().finished[static_cast<int>(FinishReason::kDeadline)].load(), 2);
}

TEST(SchedulerTest, BadAndOversizedRequestsFailCleanlyWhileOthersComplete) {
  RunnerOptions options;
  options.block_size = 4;
  options.num_kv_blocks = 8;  // 32 tokens in all
  std::unique_ptr<ModelRunner> runner = Open(TinyModel("tiny-llama"), options);
  ASSERT_NE(runner, nullptr);
  Scheduler scheduler(*runner, {});
  Collector collector;
  GenerationRequest good;
  good.prompt = {1, 2, 3, 4, 5};
  good.params.ignore_eos = true;
  good.params.max_tokens = 10;
  ASSERT_TRUE(scheduler.Submit(ToSequence(1, good, collector.Sink())).ok());
  ASSERT_TRUE(scheduler.Submit(ToSequence(2, good, collector.Sink())).ok());
  // Before Start(): once running, sequence 1 may finish (and free its id)
  // before the duplicate arrives on a fast machine.
  EXPECT_EQ(scheduler.Submit(ToSequence(1, good, collector.Sink())).code(), absl::StatusCode::kAlreadyExists);
  scheduler.Start();

  GenerationRequest oversized = good;
  oversized.params.max_tokens = 40;  // 45 tokens > 32 in the whole pool
  EXPECT_EQ(scheduler.Submit(ToSequence(3, oversized, collector.Sink())).code(),
            absl::StatusCode::kResourceExhausted);
  GenerationRequest bad = good;
  bad.prompt.clear();
  EXPECT_EQ(scheduler.Submit(ToSequence(4, bad, collector.Sink())).code(), absl::StatusCode::kInvalidArgument);
  bad.prompt = {static_cast<int32_t>(runner->config().vocab_size)};
  EXPECT_EQ(scheduler.Submit(ToSequence(4, bad, collector.Sink())).code(), absl::StatusCode::kInvalidArgument);
  bad.prompt = {-1};
  EXPECT_EQ(scheduler.Submit(ToSequence(4, bad, collector.Sink())).code(), absl::StatusCode::kInvalidArgument);
  bad = good;
  bad.params.max_tokens = static_cast<int32_t>(runner->config().max_position_embeddings);
  EXPECT_EQ(scheduler.Submit(ToSequence(4, bad, collector.Sink())).code(), absl::StatusCode::kInvalidArgument);
  bad = good;
  bad.params.top_p = 0.0f;
  EXPECT_EQ(scheduler.Submit(ToSequence(4, bad, collector.Sink())).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler.Submit(ToSequence(4, good, nullptr)).code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(collector.WaitFinished(2));
  for (uint64_t id : {1, 2}) {
    EXPECT_EQ(collector.Get(id).reason, FinishReason::kLength);
    EXPECT_EQ(collector.Get(id).tokens.size(), 10u);
  }
  EXPECT_EQ(scheduler.Load().free_kv_blocks, scheduler.Load().total_kv_blocks);

  // The synchronous core reports a bad request as an error event instead.
  scheduler.Stop();  // the runner is free for the core now
  StepScheduler core(*runner, {});
  std::vector<TokenEvent> events;
  core.Add(ToSequence(9, oversized, [&](const TokenEvent& e) { events.push_back(e); }));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].finished);
  EXPECT_EQ(events[0].finish_reason, FinishReason::kError);
  EXPECT_EQ(events[0].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(core.Step());
}

TEST(SchedulerTest, RunningCapIsRespected) {
  std::unique_ptr<ModelRunner> runner = Open(TinyModel("tiny-qwen2"));
  ASSERT_NE(runner, nullptr);
  SchedulerOptions options;
  options.max_num_seqs = 2;
  Scheduler scheduler(*runner, options);
  Collector collector;
  auto sink = collector.Sink();
  std::atomic<int64_t> max_seen_running{0};
  const std::vector<GenerationRequest> requests = MixedRequests(runner->config().vocab_size, 6, 20, 8, 3);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(scheduler
                    .Submit(ToSequence(i, requests[i],
                                       [&](const TokenEvent& e) {
                                         const int64_t running = scheduler.Load().running;
                                         if (running > max_seen_running) max_seen_running = running;
                                         sink(e);
                                       }))
                    .ok());
  }
  scheduler.Start();
  ASSERT_TRUE(collector.WaitFinished(6));
  EXPECT_EQ(scheduler.counters().peak_running.load(), 2);
  EXPECT_LE(max_seen_running.load(), 2);
  EXPECT_GE(max_seen_running.load(), 1);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(collector.Get(i).tokens.size(), static_cast<size_t>(requests[i].params.max_tokens));
  }
}

TEST(SchedulerTest, DrainFinishesInFlightAndStopEndsEverySequence) {
  std::unique_ptr<ModelRunner> runner = Open(TinyModel("tiny-llama"));
  ASSERT_NE(runner, nullptr);
  const std::vector<GenerationRequest> requests = MixedRequests(runner->config().vocab_size, 5, 30, 12, 5);
  {
    Scheduler scheduler(*runner, {});
    Collector collector;
    scheduler.Start();
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(scheduler.Submit(ToSequence(i, requests[i], collector.Sink())).ok());
    }
    scheduler.Drain();  // returns once all accepted work is done
    for (size_t i = 0; i < requests.size(); ++i) {
      const Collector::Outcome o = collector.Get(i);
      EXPECT_EQ(o.finished_events, 1);
      EXPECT_EQ(o.reason, FinishReason::kLength);
      EXPECT_EQ(o.tokens.size(), static_cast<size_t>(requests[i].params.max_tokens));
    }
    EXPECT_EQ(scheduler.Submit(ToSequence(99, requests[0], collector.Sink())).code(),
              absl::StatusCode::kUnavailable);
    EXPECT_EQ(scheduler.Load().free_kv_blocks, scheduler.Load().total_kv_blocks);
  }
  {
    // Stop mid-flight: every sequence still gets exactly one final event.
    Scheduler scheduler(*runner, {});
    Collector collector;
    auto sink = collector.Sink();
    absl::Notification started, stop_called;
    int events = 0;  // engine thread only
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(scheduler
                      .Submit(ToSequence(i, requests[i],
                                         [&](const TokenEvent& e) {
                                           sink(e);
                                           if (++events == 1) {
                                             started.Notify();
                                             stop_called.WaitForNotification();
                                           }
                                         }))
                      .ok());
    }
    scheduler.Start();
    ASSERT_TRUE(started.WaitForNotificationWithTimeout(kWaitLimit));
    std::thread stopper([&] { scheduler.Stop(); });
    // Once Submit is refused, Stop() has set the state and waits to join:
    // give the engine back. (Requests accepted meanwhile are cancelled too.)
    for (uint64_t id = 1000; scheduler.Submit(ToSequence(id, requests[0], [](const TokenEvent&) {})).ok(); ++id) {
      std::this_thread::yield();
    }
    stop_called.Notify();
    stopper.join();
    int cancelled = 0;
    for (uint64_t i = 0; i < requests.size(); ++i) {
      const Collector::Outcome o = collector.Get(i);
      EXPECT_EQ(o.finished_events, 1) << "request " << i;
      cancelled += o.reason == FinishReason::kCancelled ? 1 : 0;
    }
    EXPECT_EQ(cancelled, static_cast<int>(requests.size()));
  }
  {
    // Stop before Start: queued requests end as cancelled, on the caller's thread.
    Scheduler scheduler(*runner, {});
    Collector collector;
    ASSERT_TRUE(scheduler.Submit(ToSequence(1, requests[0], collector.Sink())).ok());
    scheduler.Stop();
    EXPECT_EQ(collector.Get(1).finished_events, 1);
    EXPECT_EQ(collector.Get(1).reason, FinishReason::kCancelled);
  }
}

}  // namespace
}  // namespace polar
