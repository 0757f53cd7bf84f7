// The registry's validation and the text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/): HELP and
// TYPE lines, then one `name{labels} value` line per sample, values spelled so
// they parse back to the same double.
#include "services/common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace polar {
namespace {

bool IsLetterOrUnderscore(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool IsValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (!(IsLetterOrUnderscore(c) || c == ':' || (i > 0 && IsDigit(c)))) return false;
  }
  return true;
}

// [a-zA-Z_][a-zA-Z0-9_]*, and not `__...`, which Prometheus keeps for itself.
bool IsValidLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (!(IsLetterOrUnderscore(c) || (i > 0 && IsDigit(c)))) return false;
  }
  return true;
}

// Prometheus rejects a whole scrape over one invalid UTF-8 byte, so bad text is
// refused where it enters rather than discovered at scrape time.
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto byte = static_cast<unsigned char>(s[i]);
    size_t extra;
    uint32_t code_point;
    if (byte < 0x80) {
      ++i;
      continue;
    } else if ((byte & 0xE0) == 0xC0) {
      extra = 1;
      code_point = byte & 0x1F;
    } else if ((byte & 0xF0) == 0xE0) {
      extra = 2;
      code_point = byte & 0x0F;
    } else if ((byte & 0xF8) == 0xF0) {
      extra = 3;
      code_point = byte & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= extra; ++k) {
      auto next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code_point = (code_point << 6) | (next & 0x3F);
    }
    // Overlong encodings, UTF-16 surrogates and values past U+10FFFF.
    static constexpr uint32_t kMinForLength[4] = {0, 0x80, 0x800, 0x10000};
    if (code_point < kMinForLength[extra] || (code_point >= 0xD800 && code_point <= 0xDFFF) ||
        code_point > 0x10FFFF) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

// HELP text: backslash and newline.
void AppendEscapedHelp(std::string_view text, std::string& out) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// Label values: backslash, double quote and newline.
void AppendEscapedLabelValue(std::string_view value, std::string& out) {
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// `a="x",b="y"`: the inside of the braces, so histograms can append `le`.
std::string RenderLabelPairs(const std::vector<std::string>& names, const std::vector<std::string>& values) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    out += names[i];
    out += "=\"";
    AppendEscapedLabelValue(values[i], out);
    out += '"';
  }
  return out;
}

// One sample line; `labels` without braces, possibly empty.
void AppendSample(std::string& out, std::string_view name, std::string_view suffix, std::string_view labels,
                  double value) {
  out += name;
  out += suffix;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += FormatMetricValue(value);
  out += '\n';
}

void RenderChild(std::string& out, const std::string& name, const std::string& labels, const Counter& counter) {
  AppendSample(out, name, "", labels, counter.Value());
}

void RenderChild(std::string& out, const std::string& name, const std::string& labels, const Gauge& gauge) {
  AppendSample(out, name, "", labels, gauge.Value());
}

void RenderChild(std::string& out, const std::string& name, const std::string& labels, const Histogram& histogram) {
  Histogram::Snapshot snapshot = histogram.Collect();
  const std::vector<double>& bounds = histogram.upper_bounds();
  std::string prefix = labels.empty() ? std::string() : labels + ",";
  for (size_t b = 0; b <= bounds.size(); ++b) {
    double le = b < bounds.size() ? bounds[b] : INFINITY;
    std::string bucket_labels = absl::StrCat(prefix, "le=\"", FormatMetricValue(le), "\"");
    AppendSample(out, name, "_bucket", bucket_labels, static_cast<double>(snapshot.cumulative_counts[b]));
  }
  AppendSample(out, name, "_sum", labels, snapshot.sum);
  AppendSample(out, name, "_count", labels, static_cast<double>(snapshot.count));
}

template <typename Metric>
constexpr const char* TypeName() {
  if constexpr (std::is_same_v<Metric, Counter>) return "counter";
  if constexpr (std::is_same_v<Metric, Gauge>) return "gauge";
  if constexpr (std::is_same_v<Metric, Histogram>) return "histogram";
}

// A gauge whose value is read when the registry renders.
class CallbackGaugeFamily final : public MetricFamilyBase {
 public:
  CallbackGaugeFamily(MetricSpec spec, std::function<double()> read)
      : MetricFamilyBase(std::move(spec.name), std::move(spec.help)), read_(std::move(read)) {}
  void Render(std::string& out) const override {
    RenderHeader(out, "gauge");
    AppendSample(out, name(), "", "", read_());
  }

 private:
  std::function<double()> read_;
};

// A constant 1 whose labels carry the facts.
class InfoFamily final : public MetricFamilyBase {
 public:
  InfoFamily(std::string name, std::string help, std::string labels)
      : MetricFamilyBase(std::move(name), std::move(help)), labels_(std::move(labels)) {}
  void Render(std::string& out) const override {
    RenderHeader(out, "gauge");
    AppendSample(out, name(), "", labels_, 1.0);
  }

 private:
  std::string labels_;
};

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Shortest digits that round-trip, laid out as Go's strconv 'g' with
  // precision -1 does (what the official clients write): exponent form only
  // below 1e-4 or from 1e6 on. Histogram `le` values are label strings, so
  // they should be spelled like everyone else's ("0.0005", not "5e-04").
  char buffer[64];
  std::to_chars_result scientific =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  const char* exponent_text = std::find(buffer, scientific.ptr, 'e') + 1;
  if (*exponent_text == '+') ++exponent_text;  // from_chars takes no plus sign
  int exponent = 0;
  std::from_chars(exponent_text, scientific.ptr, exponent);
  if (exponent < -4 || exponent >= 6) return std::string(buffer, scientific.ptr);
  std::to_chars_result fixed = std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::fixed);
  return std::string(buffer, fixed.ptr);
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0.0) || !(factor > 1.0) || count < 1) {
    std::fprintf(stderr, "ExponentialBuckets(%g, %g, %d): need start > 0, factor > 1, count >= 1\n", start,
                 factor, count);
    std::abort();
  }
  std::vector<double> bounds;
  bounds.reserve(count);
  double bound = start;
  for (int i = 0; i < count; ++i) {
    bounds.push_back(bound);
    bound *= factor;
  }
  return bounds;
}

std::vector<double> DefaultLatencyBuckets() { return ExponentialBuckets(0.0005, 2.0, 18); }

Histogram::Histogram(const std::vector<double>* upper_bounds)
    : upper_bounds_(upper_bounds), bucket_counts_(new std::atomic<uint64_t>[upper_bounds->size() + 1]) {
  for (size_t b = 0; b <= upper_bounds_->size(); ++b) bucket_counts_[b].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // A bucket counts values <= its bound: the first bound >= value; past the
  // last bound lies the +Inf bucket.
  const std::vector<double>& bounds = *upper_bounds_;
  size_t bucket = std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin();
  bucket_counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Collect() const {
  Snapshot snapshot;
  snapshot.cumulative_counts.resize(upper_bounds_->size() + 1);
  uint64_t running = 0;
  for (size_t b = 0; b <= upper_bounds_->size(); ++b) {
    running += bucket_counts_[b].load(std::memory_order_relaxed);
    snapshot.cumulative_counts[b] = running;
  }
  snapshot.count = running;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

void DieGetOnLabelledFamily(const std::string& name) {
  std::fprintf(stderr, "metric family %s has labels: use WithLabels, not Get\n", name.c_str());
  std::abort();
}

void MetricFamilyBase::RenderHeader(std::string& out, const char* type) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  AppendEscapedHelp(help_, out);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += type;
  out += '\n';
}

template <typename Metric>
MetricFamily<Metric>::MetricFamily(MetricSpec spec, std::vector<double> upper_bounds)
    : MetricFamilyBase(std::move(spec.name), std::move(spec.help)),
      label_names_(std::move(spec.label_names)),
      max_children_(spec.max_children),
      upper_bounds_(std::move(upper_bounds)) {
  if (label_names_.empty()) unlabelled_ = *WithLabels({});
}

template <typename Metric>
absl::StatusOr<Metric*> MetricFamily<Metric>::WithLabels(const std::vector<std::string>& label_values) {
  if (label_values.size() != label_names_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(name(), ": ", label_values.size(),
                                                   " label values for ", label_names_.size(), " label names"));
  }
  absl::MutexLock lock(&mu_);
  auto it = children_.find(label_values);
  if (it != children_.end()) return it->second.metric.get();
  if (children_.size() >= max_children_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        name(), ": already ", children_.size(), " label combinations, the family's cap; a label is probably unbounded"));
  }
  for (const std::string& value : label_values) {
    if (!IsValidUtf8(value)) {
      return absl::InvalidArgumentError(absl::StrCat(name(), ": label value is not valid UTF-8"));
    }
  }
  Child child;
  child.labels = RenderLabelPairs(label_names_, label_values);
  if constexpr (std::is_same_v<Metric, Histogram>) {
    child.metric = std::make_unique<Histogram>(&upper_bounds_);
  } else {
    child.metric = std::make_unique<Metric>();
  }
  Metric* metric = child.metric.get();
  children_.emplace(label_values, std::move(child));
  return metric;
}

template <typename Metric>
size_t MetricFamily<Metric>::num_children() const {
  absl::MutexLock lock(&mu_);
  return children_.size();
}

template <typename Metric>
void MetricFamily<Metric>::Render(std::string& out) const {
  RenderHeader(out, TypeName<Metric>());
  absl::MutexLock lock(&mu_);
  for (const auto& [values, child] : children_) RenderChild(out, name(), child.labels, *child.metric);
}

template class MetricFamily<Counter>;
template class MetricFamily<Gauge>;
template class MetricFamily<Histogram>;

absl::Status MetricsRegistry::Reserve(const MetricSpec& spec, const std::vector<std::string>& sample_names,
                                      bool is_histogram) {
  if (!IsValidMetricName(spec.name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("metric name \"", spec.name, "\" does not match [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  if (spec.help.empty() || !IsValidUtf8(spec.help)) {
    return absl::InvalidArgumentError(absl::StrCat(spec.name, ": help text must be non-empty UTF-8"));
  }
  if (spec.max_children < 1) {
    return absl::InvalidArgumentError(absl::StrCat(spec.name, ": max_children must be at least 1"));
  }
  for (size_t i = 0; i < spec.label_names.size(); ++i) {
    const std::string& label = spec.label_names[i];
    if (!IsValidLabelName(label)) {
      return absl::InvalidArgumentError(absl::StrCat(
          spec.name, ": label name \"", label, "\" does not match [a-zA-Z_][a-zA-Z0-9_]* or starts with __"));
    }
    if (is_histogram && label == "le") {
      return absl::InvalidArgumentError(absl::StrCat(spec.name, ": label \"le\" is reserved in histograms"));
    }
    if (std::find(spec.label_names.begin(), spec.label_names.begin() + i, label) !=
        spec.label_names.begin() + i) {
      return absl::InvalidArgumentError(absl::StrCat(spec.name, ": label \"", label, "\" given twice"));
    }
  }
  for (const std::string& sample : sample_names) {
    if (sample_names_.contains(sample)) {
      return absl::AlreadyExistsError(absl::StrCat(spec.name, ": the name \"", sample, "\" is already registered"));
    }
  }
  sample_names_.insert(sample_names.begin(), sample_names.end());
  return absl::OkStatus();
}

absl::StatusOr<CounterFamily*> MetricsRegistry::AddCounter(MetricSpec spec) {
  // Prometheus' convention, and promtool's lint: a counter's name says it is
  // one, so rate(x_total) reads right and nobody graphs it raw by mistake.
  if (!spec.name.ends_with("_total")) {
    return absl::InvalidArgumentError(absl::StrCat("counter \"", spec.name, "\" must end in _total"));
  }
  absl::MutexLock lock(&mu_);
  absl::Status status = Reserve(spec, {spec.name}, /*is_histogram=*/false);
  if (!status.ok()) return status;
  auto* family = new CounterFamily(std::move(spec), {});
  families_.emplace_back(family);
  return family;
}

absl::StatusOr<GaugeFamily*> MetricsRegistry::AddGauge(MetricSpec spec) {
  absl::MutexLock lock(&mu_);
  absl::Status status = Reserve(spec, {spec.name}, /*is_histogram=*/false);
  if (!status.ok()) return status;
  auto* family = new GaugeFamily(std::move(spec), {});
  families_.emplace_back(family);
  return family;
}

absl::StatusOr<HistogramFamily*> MetricsRegistry::AddHistogram(MetricSpec spec, std::vector<double> upper_bounds) {
  for (size_t b = 0; b < upper_bounds.size(); ++b) {
    if (!std::isfinite(upper_bounds[b]) || (b > 0 && !(upper_bounds[b] > upper_bounds[b - 1]))) {
      return absl::InvalidArgumentError(absl::StrCat(
          spec.name, ": bucket bounds must be finite and strictly increasing (+Inf is implicit); bound ", b,
          " is ", FormatMetricValue(upper_bounds[b])));
    }
  }
  absl::MutexLock lock(&mu_);
  absl::Status status = Reserve(
      spec, {spec.name, spec.name + "_bucket", spec.name + "_sum", spec.name + "_count"}, /*is_histogram=*/true);
  if (!status.ok()) return status;
  auto* family = new HistogramFamily(std::move(spec), std::move(upper_bounds));
  families_.emplace_back(family);
  return family;
}

absl::Status MetricsRegistry::AddCallbackGauge(MetricSpec spec, std::function<double()> read) {
  if (!spec.label_names.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(spec.name, ": callback gauges take no labels"));
  }
  if (!read) return absl::InvalidArgumentError(absl::StrCat(spec.name, ": callback is empty"));
  absl::MutexLock lock(&mu_);
  absl::Status status = Reserve(spec, {spec.name}, /*is_histogram=*/false);
  if (!status.ok()) return status;
  families_.emplace_back(new CallbackGaugeFamily(std::move(spec), std::move(read)));
  return absl::OkStatus();
}

absl::Status MetricsRegistry::AddInfo(std::string name, std::string help,
                                      std::vector<std::pair<std::string, std::string>> labels) {
  if (!name.ends_with("_info")) {
    return absl::InvalidArgumentError(absl::StrCat("info gauge \"", name, "\" must end in _info"));
  }
  MetricSpec spec;
  spec.name = std::move(name);
  spec.help = std::move(help);
  std::vector<std::string> values;
  for (auto& [label, value] : labels) {
    if (!IsValidUtf8(value)) {
      return absl::InvalidArgumentError(absl::StrCat(spec.name, ": label value is not valid UTF-8"));
    }
    spec.label_names.push_back(std::move(label));
    values.push_back(std::move(value));
  }
  absl::MutexLock lock(&mu_);
  absl::Status status = Reserve(spec, {spec.name}, /*is_histogram=*/false);
  if (!status.ok()) return status;
  std::string rendered = RenderLabelPairs(spec.label_names, values);
  families_.emplace_back(new InfoFamily(std::move(spec.name), std::move(spec.help), std::move(rendered)));
  return absl::OkStatus();
}

std::string MetricsRegistry::RenderText() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& family : families_) family->Render(out);
  return out;
}

}  // namespace polar
