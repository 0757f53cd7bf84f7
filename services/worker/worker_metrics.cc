// See worker_metrics.h.
#include "services/worker/worker_metrics.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace polar {

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Create(MetricsRegistry* registry,
                                                                     const std::string& version) {
  std::unique_ptr<WorkerMetrics> metrics(new WorkerMetrics(registry));
  absl::Status status = registry->AddInfo("polar_build_info", "Polar build facts.", {{"version", version}});
  if (!status.ok()) return status;
  // From 100 us (a decode step of a small model) to ~52 s, doubling: finer at
  // the low end than DefaultLatencyBuckets, whose first bound is 0.5 ms.
  absl::StatusOr<HistogramFamily*> step_seconds = registry->AddHistogram(
      {"polar_step_seconds", "Engine step time (forward pass, sampling, events) by phase.", {"phase"}},
      ExponentialBuckets(0.0001, 2.0, 20));
  if (!step_seconds.ok()) return step_seconds.status();
  for (int p = 0; p < kNumStepPhases; ++p) {
    absl::StatusOr<Histogram*> child = (*step_seconds)->WithLabels({StepPhaseName(static_cast<StepPhase>(p))});
    if (!child.ok()) return child.status();
    metrics->step_seconds_[p] = *child;
  }
  absl::StatusOr<HistogramFamily*> batch_size = registry->AddHistogram(
      {"polar_batch_size", "Sequences per engine step.", {}}, ExponentialBuckets(1.0, 2.0, 10));
  if (!batch_size.ok()) return batch_size.status();
  metrics->batch_size_ = &(*batch_size)->Get();
  return metrics;
}

std::function<void(const StepStats&)> WorkerMetrics::StepObserver() {
  return [this](const StepStats& step) {
    step_seconds_[static_cast<int>(step.phase)]->Observe(step.seconds);
    batch_size_->Observe(static_cast<double>(step.num_seqs));
  };
}

absl::Status WorkerMetrics::Attach(const Scheduler* scheduler, const HeadCounters& heads, const MlpCounters* mlp) {
  MetricsRegistry* registry = registry_;
  const SchedulerCounters& c = scheduler->counters();
  absl::Status status;

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
  };
  for (const Callback& cb : callbacks) {
    status = registry->AddCallbackGauge({cb.name, cb.help, {}}, cb.read);
    if (!status.ok()) return status;
  }

  absl::MutexLock lock(&mu_);
  auto add_counter = [&](const char* name, const char* help,
                         const std::atomic<int64_t>* source) -> absl::Status {
    absl::StatusOr<CounterFamily*> family = registry->AddCounter({name, help, {}});
    if (!family.ok()) return family.status();
    mirrors_.push_back({source, 1.0, {&(*family)->Get()}});
    return absl::OkStatus();
  };
  status = add_counter("polar_prompt_tokens_total", "Prompt tokens of admitted requests.", &c.prompt_tokens);
  if (!status.ok()) return status;
  status = add_counter("polar_generation_tokens_total", "Generated tokens.", &c.generated_tokens);
  if (!status.ok()) return status;
  status = add_counter("polar_preemptions_total", "Sequences preempted for KV blocks.", &c.preemptions);
  if (!status.ok()) return status;

  // Per layer, heads computed and heads in total, counted once per token by
  // the model's attention (Polar Sparsity: routed layers of decoding
  // sequences compute fewer than all).
  absl::StatusOr<CounterFamily*> active = registry->AddCounter(
      {"polar_attention_heads_active_total", "Attention heads computed, per token, by layer.", {"layer"}});
  if (!active.ok()) return active.status();
  absl::StatusOr<CounterFamily*> total = registry->AddCounter(
      {"polar_attention_heads_total", "Attention heads of the model, per token, by layer.", {"layer"}});
  if (!total.ok()) return total.status();
  for (int64_t layer = 0; layer < heads.num_layers; ++layer) {
    const std::string label = absl::StrCat(layer);
    absl::StatusOr<Counter*> a = (*active)->WithLabels({label});
    absl::StatusOr<Counter*> t = (*total)->WithLabels({label});
    if (!a.ok()) return a.status();
    if (!t.ok()) return t.status();
    mirrors_.push_back(Mirror{&heads.active[layer], 1.0, {*a}});
    mirrors_.push_back(Mirror{&heads.total[layer], 1.0, {*t}});
  }
  // Opt-in (--per-head-metrics): tokens each query head was computed for.
  if (heads.per_head != nullptr) {
    absl::StatusOr<CounterFamily*> selected = registry->AddCounter(
        {"polar_attention_head_selected_total", "Tokens for which each attention head was computed.",
         {"layer", "head"}});
    if (!selected.ok()) return selected.status();
    for (int64_t layer = 0; layer < heads.num_layers; ++layer) {
      for (int64_t head = 0; head < heads.num_heads; ++head) {
        absl::StatusOr<Counter*> c = (*selected)->WithLabels({absl::StrCat(layer), absl::StrCat(head)});
        if (!c.ok()) return c.status();
        mirrors_.push_back(Mirror{&heads.per_head[layer * heads.num_heads + head], 1.0, {*c}});
      }
    }
  }

  // Per layer, fc1 neurons computed and in total, per token (MLP sparsity:
  // sparse decode steps compute their batch's k of ffn).
  if (mlp == nullptr) return absl::OkStatus();
  absl::StatusOr<CounterFamily*> mlp_active = registry->AddCounter(
      {"polar_mlp_neurons_active_total", "MLP (fc1) neurons computed, per token, by layer.", {"layer"}});
  if (!mlp_active.ok()) return mlp_active.status();
  absl::StatusOr<CounterFamily*> mlp_total = registry->AddCounter(
      {"polar_mlp_neurons_total", "MLP (fc1) neurons of the model, per token, by layer.", {"layer"}});
  if (!mlp_total.ok()) return mlp_total.status();
  for (int64_t layer = 0; layer < mlp->num_layers; ++layer) {
    const std::string label = absl::StrCat(layer);
    absl::StatusOr<Counter*> a = (*mlp_active)->WithLabels({label});
    absl::StatusOr<Counter*> t = (*mlp_total)->WithLabels({label});
    if (!a.ok()) return a.status();
    if (!t.ok()) return t.status();
    mirrors_.push_back(Mirror{&mlp->active[layer], 1.0, {*a}});
    mirrors_.push_back(Mirror{&mlp->total[layer], 1.0, {*t}});
  }
  return absl::OkStatus();
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

void WorkerMetrics::DiscardPendingGrowth() {
  absl::MutexLock lock(&mu_);
  for (Mirror& m : mirrors_) m.last = m.source->load(std::memory_order_relaxed);
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
