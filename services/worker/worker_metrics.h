// The worker's Prometheus metrics, fed from the Scheduler without touching
// the engine step.
//
// Per-step distributions need per-step values, so the histograms
// polar_step_seconds{phase} and polar_batch_size are fed by the scheduler's
// on_step hook (StepObserver): a few relaxed atomic adds on the engine thread,
// no lock and no allocation, so counting does not slow the step.
//
// Cumulative totals come from the scheduler's relaxed atomics
// (SchedulerCounters) instead: Sync() adds each counter's growth since the
// previous Sync to the registry's counters (tokens, preemptions, attention
// heads and MLP neurons per layer). A pump thread calls Sync a few times a second; a scrape
// is at most one period stale. Gauges (running, waiting, KV usage) are
// callback gauges read at scrape time.
//
// Setup is two-phase because the hook must be in SchedulerOptions before the
// Scheduler exists: Create, put StepObserver() into the options, construct
// the Scheduler, then Attach it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/model/head_sparsity.h"
#include "engine/model/mlp_sparsity.h"
#include "engine/runtime/scheduler.h"
#include "services/common/metrics.h"

namespace polar {

class WorkerMetrics {
 public:
  // Registers the build info and the step histograms in `registry`, which
  // must outlive the result.
  static absl::StatusOr<std::unique_ptr<WorkerMetrics>> Create(MetricsRegistry* registry,
                                                               const std::string& version);
  ~WorkerMetrics();  // StopPump()

  // For SchedulerOptions::on_step: observes one step into the histograms.
  // Lock-free; valid while this object lives.
  std::function<void(const StepStats&)> StepObserver();
  // Registers the families read from `scheduler` (gauges and mirrored
  // counters), the model's per-layer head counters and, for models with MLP
  // sparsity (OPT; null otherwise), its per-layer neuron counters; call
  // once, before StartPump. All must outlive this.
  absl::Status Attach(const Scheduler* scheduler, const HeadCounters& heads, const MlpCounters* mlp = nullptr);

  // Mirrors the scheduler's counter growth since the last call. Thread-safe.
  void Sync();
  // Forgets the growth since the last Sync (the worker's warm-up step, which
  // served no request, must not count as served tokens). Thread-safe.
  void DiscardPendingGrowth();
  // Calls Sync every `period_ms` on a thread of its own until StopPump.
  void StartPump(int period_ms = 250);
  void StopPump();

 private:
  struct Mirror {
    const std::atomic<int64_t>* source;
    double scale;  // registry units per source unit (nanoseconds -> seconds)
    std::vector<Counter*> targets;
    int64_t last = 0;
  };
  explicit WorkerMetrics(MetricsRegistry* registry) : registry_(registry) {}

  MetricsRegistry* registry_;
  Histogram* step_seconds_[kNumStepPhases] = {};  // by StepPhase
  Histogram* batch_size_ = nullptr;
  absl::Mutex mu_;
  std::vector<Mirror> mirrors_ ABSL_GUARDED_BY(mu_);
  std::thread pump_;
  absl::Notification stop_;
};

}  // namespace polar
