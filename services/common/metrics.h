// Polar's metrics registry and its Prometheus text exposition (format 0.0.4).
//
// prometheus-cpp is not packaged by Debian, and the format is small, so Polar
// writes it itself. A MetricsRegistry owns metric families (counter, gauge,
// histogram, plus render-time callback gauges and info gauges); each family has
// a fixed list of label names and one child per tuple of label values. Callers
// create the children they need once (WithLabels takes a lock) and keep the
// returned pointer: updating a child is a few relaxed atomic operations and
// never locks, so counting costs the engine step nothing measurable. Locks are
// taken only to create children and to render.
//
// Children live as long as the registry and are never removed, so a family
// refuses new children past a cap (MetricSpec::max_children): an unbounded
// label (request ids, prompts) would otherwise grow memory and the scrape
// forever. Naming rules are checked at registration (see docs/metrics.md).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace polar {

// Generous for bounded labels (layers, phases, status codes) yet small enough
// that a bug feeding an unbounded value into a label is caught early.
inline constexpr size_t kDefaultMaxChildren = 1024;

// What every family is registered with.
struct MetricSpec {
  // [a-zA-Z_:][a-zA-Z0-9_:]*, `polar_` prefix by convention; counters must end
  // in `_total`, info gauges in `_info`.
  std::string name;
  // One line for humans, required (promtool flags metrics without help).
  std::string help;
  // [a-zA-Z_][a-zA-Z0-9_]*, no `__` prefix (reserved by Prometheus), no
  // duplicates; `le` is reserved in histograms.
  std::vector<std::string> label_names;
  // Most children the family will create; WithLabels fails past it.
  size_t max_children = kDefaultMaxChildren;
};

// A value that only goes up (requests, tokens): rate() works on it across
// process restarts because a drop is read as a reset.
class Counter {
 public:
  // Negative or NaN deltas are ignored: a counter must never go down.
  void Increment(double delta = 1.0) {
    if (!(delta >= 0.0)) return;
    value_.fetch_add(delta, std::memory_order_relaxed);
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down (running requests, KV usage).
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double delta = 1.0) { value_.fetch_add(delta, std::memory_order_relaxed); }
  void Decrement(double delta = 1.0) { value_.fetch_sub(delta, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed buckets (latencies, batch sizes). Counts are
// kept per bucket and made cumulative at render time; `_count` is derived from
// the bucket counts so a scrape always sees `_count` equal to the +Inf bucket.
class Histogram {
 public:
  // `upper_bounds`: finite and strictly increasing, owned by the family; the
  // +Inf bucket is implicit.
  explicit Histogram(const std::vector<double>* upper_bounds);

  // NaN observations are dropped (they belong to no bucket).
  void Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative_counts;  // [upper_bounds.size() + 1], last is +Inf
    double sum = 0.0;
    uint64_t count = 0;
  };
  Snapshot Collect() const;
  const std::vector<double>& upper_bounds() const { return *upper_bounds_; }

 private:
  const std::vector<double>* upper_bounds_;
  // [upper_bounds.size() + 1]: observations per bucket, not cumulative.
  std::unique_ptr<std::atomic<uint64_t>[]> bucket_counts_;
  std::atomic<double> sum_{0.0};
};

// What the registry needs of any family: its name and its samples as text.
class MetricFamilyBase {
 public:
  virtual ~MetricFamilyBase() = default;
  const std::string& name() const { return name_; }
  // Appends `# HELP`, `# TYPE` and the sample lines.
  virtual void Render(std::string& out) const = 0;

 protected:
  MetricFamilyBase(std::string name, std::string help) : name_(std::move(name)), help_(std::move(help)) {}
  void RenderHeader(std::string& out, const char* type) const;

 private:
  std::string name_;
  std::string help_;
};

[[noreturn]] void DieGetOnLabelledFamily(const std::string& name);

// A family of children of one kind (Counter, Gauge or Histogram).
template <typename Metric>
class MetricFamily final : public MetricFamilyBase {
 public:
  // The child for `label_values` (one per label name, in order), created on
  // first use. Takes the family's lock: call it once and keep the pointer.
  // ResourceExhausted past max_children, InvalidArgument on a wrong count.
  absl::StatusOr<Metric*> WithLabels(const std::vector<std::string>& label_values);
  // The only child of a family without labels (created at registration, so it
  // is exported as 0 before the first update). Aborts on a labelled family:
  // that is a caller bug, not input.
  Metric& Get() {
    if (unlabelled_ == nullptr) DieGetOnLabelledFamily(name());
    return *unlabelled_;
  }

  const std::vector<std::string>& label_names() const { return label_names_; }
  size_t num_children() const;
  void Render(std::string& out) const override;

 private:
  friend class MetricsRegistry;  // the only maker: it validates the spec first
  MetricFamily(MetricSpec spec, std::vector<double> upper_bounds);

  struct Child {
    std::string labels;  // rendered once: `a="x",b="y"`, escaped, no braces
    std::unique_ptr<Metric> metric;
  };

  std::vector<std::string> label_names_;
  size_t max_children_;
  std::vector<double> upper_bounds_;  // histograms only; children point here
  mutable absl::Mutex mu_;
  // Ordered by label values so the output is stable from scrape to scrape.
  std::map<std::vector<std::string>, Child> children_ ABSL_GUARDED_BY(mu_);
  Metric* unlabelled_ = nullptr;
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;
extern template class MetricFamily<Counter>;
extern template class MetricFamily<Gauge>;
extern template class MetricFamily<Histogram>;

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Each returns the new family, owned by the registry (valid as long as it),
  // or InvalidArgument for a bad name, label or help, AlreadyExists when a
  // name (or a histogram's _bucket/_sum/_count) is taken.
  absl::StatusOr<CounterFamily*> AddCounter(MetricSpec spec);
  absl::StatusOr<GaugeFamily*> AddGauge(MetricSpec spec);
  // `upper_bounds`: finite, strictly increasing; +Inf is added implicitly.
  absl::StatusOr<HistogramFamily*> AddHistogram(MetricSpec spec, std::vector<double> upper_bounds);
  // A gauge without labels whose value `read` returns at render time (queue
  // sizes, free KV blocks owned elsewhere). `read` runs under the registry's
  // lock on the scraping thread: it must be quick, thread-safe, and must not
  // call into this registry.
  absl::Status AddCallbackGauge(MetricSpec spec, std::function<double()> read);
  // A constant gauge of value 1 whose labels carry facts, e.g.
  // polar_build_info{version="0.1.0",commit="abc"} 1. The name must end in _info.
  absl::Status AddInfo(std::string name, std::string help,
                       std::vector<std::pair<std::string, std::string>> labels);

  // Every family in registration order, in the text exposition format 0.0.4.
  std::string RenderText() const;

 private:
  // Checks `spec` and reserves its sample names.
  absl::Status Reserve(const MetricSpec& spec, const std::vector<std::string>& sample_names,
                       bool is_histogram) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<MetricFamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> sample_names_ ABSL_GUARDED_BY(mu_);
};

// Bucket bounds start, start*factor, ..., `count` of them. Aborts on start <= 0,
// factor <= 1 or count < 1: these are constants in the caller, so a bad one is
// a bug.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Latencies in seconds from 0.5 ms to ~65 s, doubling: covers inter-token
// latency on a GPU and end-to-end latency of long CPU generations alike.
std::vector<double> DefaultLatencyBuckets();

// Prometheus' spelling of a sample value: shortest text that parses back to the
// same double, and +Inf, -Inf, NaN.
std::string FormatMetricValue(double value);

}  // namespace polar
