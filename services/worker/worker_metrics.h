// The worker's Prometheus metrics, fed from the Scheduler without touching
// the engine step.
//
// The scheduler keeps cumulative relaxed atomics (SchedulerCounters) and has
// no per-step hook, so the worker mirrors them: Sync() adds each counter's
// growth since the previous Sync to the registry's counters (tokens,
// preemptions, step time and step count per phase, attention heads per
// layer). A pump thread calls Sync a few times a second; a scrape is at most
// one period stale, and the engine thread never does any metrics work.
// Gauges (running, waiting, KV usage, batch size) are callback gauges read at
// scrape time.
//
// Step time is exported as counters (polar_step_seconds_total{phase},
// polar_steps_total{phase}), not a histogram: from sums alone a histogram's
// buckets would be invented. rate(sum)/rate(count) gives the mean step time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/runtime/scheduler.h"
#include "services/common/metrics.h"

namespace polar {

class WorkerMetrics {
 public:
  // Registers every family in `registry`; both must outlive the result.
  static absl::StatusOr<std::unique_ptr<WorkerMetrics>> Create(MetricsRegistry* registry,
                                                               const Scheduler* scheduler,
                                                               int64_t num_layers, int64_t num_heads,
                                                               const std::string& version);
  ~WorkerMetrics();  // StopPump()

  // Mirrors the scheduler's counter growth since the last call. Thread-safe.
  void Sync();
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
  WorkerMetrics(const Scheduler* scheduler) : scheduler_(scheduler) {}

  const Scheduler* scheduler_;
  absl::Mutex mu_;
  std::vector<Mirror> mirrors_ ABSL_GUARDED_BY(mu_);
  std::thread pump_;
  absl::Notification stop_;
};

}  // namespace polar
