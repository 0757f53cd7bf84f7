// See worker_metrics.h.
#include "services/worker/worker_metrics.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace polar {

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Create(MetricsRegistry* registry,
                                                                     const Scheduler* scheduler,
                                                                     int64_t num_layers, int64_t num_heads,
                                                                     const std::string& version) {
  std::unique_ptr<WorkerMetrics> metrics(new WorkerMetrics(scheduler));
  const SchedulerCounters& c = scheduler->counters();
  absl::Status status = registry->AddInfo("polar_build_info", "Polar build facts.", {{"version", version}});
  if (!status.ok()) return status;

  // Gauges read at scrape time.
  struct Callback {
    const char* name;
    const char* help;
    std::function<double()> read;
  };
  const Callback callbacks[] = {
      {"polar_requests_running", "Sequences in the running batch.",
       [scheduler] { return static_cast<double>(scheduler->Load().running); }},
      {"polar_requests_waiting", "Sequences accepted but not running.",
       [scheduler] { return static_cast<double>(scheduler->Load().waiting); }},
      {"polar_kv_cache_usage_ratio", "Fraction of KV cache blocks in use.",
       [scheduler] {
         const LoadReport load = scheduler->Load();
         if (load.total_kv_blocks <= 0) return 0.0;
         return 1.0 - static_cast<double>(load.free_kv_blocks) / static_cast<double>(load.total_kv_blocks);
       }},
      {"polar_batch_size", "Sequences in the most recent engine step.",
       [&c] { return static_cast<double>(c.last_batch_seqs.load(std::memory_order_relaxed)); }},
  };
  for (const Callback& cb : callbacks) {
    status = registry->AddCallbackGauge({cb.name, cb.help, {}}, cb.read);
    if (!status.ok()) return status;
  }

  absl::MutexLock lock(&metrics->mu_);
  auto add_counter = [&](const char* name, const char* help,
                         const std::atomic<int64_t>* source) -> absl::Status {
    absl::StatusOr<CounterFamily*> family = registry->AddCounter({name, help, {}});
    if (!family.ok()) return family.status();
    metrics->mirrors_.push_back({source, 1.0, {&(*family)->Get()}});
    return absl::OkStatus();
  };
  status = add_counter("polar_prompt_tokens_total", "Prompt tokens of admitted requests.", &c.prompt_tokens);
  if (!status.ok()) return status;
  status = add_counter("polar_generation_tokens_total", "Generated tokens.", &c.generated_tokens);
  if (!status.ok()) return status;
  status = add_counter("polar_preemptions_total", "Sequences preempted for KV blocks.", &c.preemptions);
  if (!status.ok()) return status;

  absl::StatusOr<CounterFamily*> step_seconds = registry->AddCounter(
      {"polar_step_seconds_total", "Engine step time (forward + sampling) by phase.", {"phase"}});
  if (!step_seconds.ok()) return step_seconds.status();
  absl::StatusOr<CounterFamily*> steps =
      registry->AddCounter({"polar_steps_total", "Engine steps by phase.", {"phase"}});
  if (!steps.ok()) return steps.status();
  for (int p = 0; p < kNumStepPhases; ++p) {
    const std::string phase = StepPhaseName(static_cast<StepPhase>(p));
    absl::StatusOr<Counter*> seconds = (*step_seconds)->WithLabels({phase});
    absl::StatusOr<Counter*> count = (*steps)->WithLabels({phase});
    if (!seconds.ok()) return seconds.status();
    if (!count.ok()) return count.status();
    metrics->mirrors_.push_back({&c.step_nanos[p], 1e-9, {*seconds}});
    metrics->mirrors_.push_back({&c.steps[p], 1.0, {*count}});
  }

  // Dense model: every head of every layer is active for every token, so both
  // counters of a layer grow by num_heads per token of each step.
  absl::StatusOr<CounterFamily*> active = registry->AddCounter(
      {"polar_attention_heads_active_total", "Attention heads computed, per token, by layer.", {"layer"}});
  if (!active.ok()) return active.status();
  absl::StatusOr<CounterFamily*> total = registry->AddCounter(
      {"polar_attention_heads_total", "Attention heads of the model, per token, by layer.", {"layer"}});
  if (!total.ok()) return total.status();
  Mirror heads{&c.batch_tokens_total, static_cast<double>(num_heads), {}};
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    const std::string label = absl::StrCat(layer);
    absl::StatusOr<Counter*> a = (*active)->WithLabels({label});
    absl::StatusOr<Counter*> t = (*total)->WithLabels({label});
    if (!a.ok()) return a.status();
    if (!t.ok()) return t.status();
    heads.targets.push_back(*a);
    heads.targets.push_back(*t);
  }
  metrics->mirrors_.push_back(std::move(heads));
  return metrics;
}

WorkerMetrics::~WorkerMetrics() { StopPump(); }

void WorkerMetrics::Sync() {
  absl::MutexLock lock(&mu_);
  for (Mirror& m : mirrors_) {
    const int64_t now = m.source->load(std::memory_order_relaxed);
    const int64_t delta = now - m.last;
    if (delta <= 0) continue;
    m.last = now;
    for (Counter* target : m.targets) target->Increment(static_cast<double>(delta) * m.scale);
  }
}

void WorkerMetrics::StartPump(int period_ms) {
  if (pump_.joinable()) return;
  pump_ = std::thread([this, period_ms] {
    while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(period_ms))) Sync();
    Sync();
  });
}

void WorkerMetrics::StopPump() {
  if (!pump_.joinable()) return;
  if (!stop_.HasBeenNotified()) stop_.Notify();
  pump_.join();
}

}  // namespace polar
