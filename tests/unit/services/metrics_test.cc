// MetricsRegistry: the exact exposition text of small hand-built registries
// (the expected strings are the format's spec), escaping, histogram bucket
// math, exact totals under concurrent updates, the per-family child cap, name
// validation, and a full registry checked by the real `promtool check metrics`.
#include "services/common/metrics.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace polar {
namespace {

using ::testing::HasSubstr;

template <typename T>
T* Unwrap(absl::StatusOr<T*> result) {
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *result : nullptr;
}

TEST(MetricsTest, CounterWithAndWithoutLabels) {
  MetricsRegistry registry;
  CounterFamily* preemptions =
      Unwrap(registry.AddCounter({.name = "polar_preemptions_total", .help = "Sequences preempted."}));
  CounterFamily* requests = Unwrap(registry.AddCounter(
      {.name = "polar_requests_total", .help = "Finished requests.", .label_names = {"code", "finish_reason"}}));
  ASSERT_NE(preemptions, nullptr);
  ASSERT_NE(requests, nullptr);
  preemptions->Get().Increment();
  preemptions->Get().Increment(2);
  Counter* ok_stop = Unwrap(requests->WithLabels({"OK", "stop"}));
  Counter* ok_length = Unwrap(requests->WithLabels({"OK", "length"}));
  ok_stop->Increment(5);
  ok_length->Increment();
  // The same labels give the same child.
  EXPECT_EQ(Unwrap(requests->WithLabels({"OK", "stop"})), ok_stop);
  EXPECT_EQ(requests->num_children(), 2u);

  EXPECT_EQ(registry.RenderText(),
            "# HELP polar_preemptions_total Sequences preempted.\n"
            "# TYPE polar_preemptions_total counter\n"
            "polar_preemptions_total 3\n"
            "# HELP polar_requests_total Finished requests.\n"
            "# TYPE polar_requests_total counter\n"
            "polar_requests_total{code=\"OK\",finish_reason=\"length\"} 1\n"
            "polar_requests_total{code=\"OK\",finish_reason=\"stop\"} 5\n");
}

TEST(MetricsTest, CounterIgnoresNegativeAndNaN) {
  MetricsRegistry registry;
  CounterFamily* family = Unwrap(registry.AddCounter({.name = "x_total", .help = "h"}));
  family->Get().Increment(1.5);
  family->Get().Increment(-1);
  family->Get().Increment(std::nan(""));
  EXPECT_EQ(family->Get().Value(), 1.5);
}

TEST(MetricsTest, GaugeAndSpecialValues) {
  MetricsRegistry registry;
  GaugeFamily* gauge = Unwrap(registry.AddGauge({.name = "g", .help = "h", .label_names = {"k"}}));
  Gauge* a = Unwrap(gauge->WithLabels({"a"}));
  Gauge* b = Unwrap(gauge->WithLabels({"b"}));
  Gauge* c = Unwrap(gauge->WithLabels({"c"}));
  Gauge* d = Unwrap(gauge->WithLabels({"d"}));
  Gauge* e = Unwrap(gauge->WithLabels({"e"}));
  a->Set(0.25);
  a->Increment(3);
  a->Decrement(0.5);
  b->Set(std::numeric_limits<double>::infinity());
  c->Set(-std::numeric_limits<double>::infinity());
  d->Set(std::nan(""));
  e->Set(1e21);
  EXPECT_EQ(registry.RenderText(),
            "# HELP g h\n"
            "# TYPE g gauge\n"
            "g{k=\"a\"} 2.75\n"
            "g{k=\"b\"} +Inf\n"
            "g{k=\"c\"} -Inf\n"
            "g{k=\"d\"} NaN\n"
            "g{k=\"e\"} 1e+21\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithInf) {
  MetricsRegistry registry;
  HistogramFamily* family = Unwrap(registry.AddHistogram(
      {.name = "polar_step_seconds", .help = "Step time.", .label_names = {"phase"}}, {0.5, 1, 10}));
  Histogram* decode = Unwrap(family->WithLabels({"decode"}));
  // Prometheus buckets are upper-inclusive: 0.5 lands in le="0.5", 10 in le="10".
  for (double v : {0.25, 0.5, 0.75, 10.0, 12.0}) decode->Observe(v);
  decode->Observe(std::nan(""));  // dropped
  Unwrap(family->WithLabels({"prefill"}));  // exported with zeros before any observation

  EXPECT_EQ(registry.RenderText(),
            "# HELP polar_step_seconds Step time.\n"
            "# TYPE polar_step_seconds histogram\n"
            "polar_step_seconds_bucket{phase=\"decode\",le=\"0.5\"} 2\n"
            "polar_step_seconds_bucket{phase=\"decode\",le=\"1\"} 3\n"
            "polar_step_seconds_bucket{phase=\"decode\",le=\"10\"} 4\n"
            "polar_step_seconds_bucket{phase=\"decode\",le=\"+Inf\"} 5\n"
            "polar_step_seconds_sum{phase=\"decode\"} 23.5\n"
            "polar_step_seconds_count{phase=\"decode\"} 5\n"
            "polar_step_seconds_bucket{phase=\"prefill\",le=\"0.5\"} 0\n"
            "polar_step_seconds_bucket{phase=\"prefill\",le=\"1\"} 0\n"
            "polar_step_seconds_bucket{phase=\"prefill\",le=\"10\"} 0\n"
            "polar_step_seconds_bucket{phase=\"prefill\",le=\"+Inf\"} 0\n"
            "polar_step_seconds_sum{phase=\"prefill\"} 0\n"
            "polar_step_seconds_count{phase=\"prefill\"} 0\n");
}

TEST(MetricsTest, HistogramWithoutLabelsOrBounds) {
  MetricsRegistry registry;
  HistogramFamily* only_inf = Unwrap(registry.AddHistogram({.name = "h", .help = "x"}, {}));
  only_inf->Get().Observe(-3);
  only_inf->Get().Observe(1e300);
  Histogram::Snapshot snapshot = only_inf->Get().Collect();
  EXPECT_EQ(snapshot.cumulative_counts, std::vector<uint64_t>({2}));
  EXPECT_EQ(snapshot.count, 2u);
  EXPECT_EQ(registry.RenderText(),
            "# HELP h x\n"
            "# TYPE h histogram\n"
            "h_bucket{le=\"+Inf\"} 2\n"
            "h_sum 1e+300\n"
            "h_count 2\n");
}

TEST(MetricsTest, HistogramBucketMath) {
  MetricsRegistry registry;
  HistogramFamily* family = Unwrap(registry.AddHistogram({.name = "batch", .help = "x"}, {1, 2, 4, 8}));
  Histogram& h = family->Get();
  // value -> first bucket whose bound is >= value.
  for (double v : {-1.0, 0.0, 1.0, 1.0000001, 2.0, 3.0, 4.0, 7.9, 8.0, 8.1, 1e9,
                   std::numeric_limits<double>::infinity()}) {
    h.Observe(v);
  }
  Histogram::Snapshot s = h.Collect();
  // le=1: -1, 0, 1; le=2: +1.0000001, 2; le=4: +3, 4; le=8: +7.9, 8; +Inf: +8.1, 1e9, inf.
  EXPECT_EQ(s.cumulative_counts, std::vector<uint64_t>({3, 5, 7, 9, 12}));
  EXPECT_EQ(s.count, 12u);
}

TEST(MetricsTest, CallbackGaugeReadsAtRenderTime) {
  MetricsRegistry registry;
  std::atomic<int> queue_size{3};
  ASSERT_TRUE(registry
                  .AddCallbackGauge({.name = "polar_gateway_queue_size", .help = "Queued requests."},
                                    [&queue_size] { return static_cast<double>(queue_size.load()); })
                  .ok());
  EXPECT_THAT(registry.RenderText(), HasSubstr("\npolar_gateway_queue_size 3\n"));
  queue_size = 7;
  EXPECT_EQ(registry.RenderText(),
            "# HELP polar_gateway_queue_size Queued requests.\n"
            "# TYPE polar_gateway_queue_size gauge\n"
            "polar_gateway_queue_size 7\n");
  EXPECT_FALSE(registry.AddCallbackGauge({.name = "cb_labels", .help = "h", .label_names = {"a"}}, [] { return 1.0; })
                   .ok());
  EXPECT_FALSE(registry.AddCallbackGauge({.name = "cb_empty", .help = "h"}, nullptr).ok());
}

TEST(MetricsTest, InfoGauge) {
  MetricsRegistry registry;
  ASSERT_TRUE(registry
                  .AddInfo("polar_build_info", "Build facts.",
                           {{"version", "0.1.0"}, {"commit", "abc123"}, {"backend", "cpu"}})
                  .ok());
  EXPECT_EQ(registry.RenderText(),
            "# HELP polar_build_info Build facts.\n"
            "# TYPE polar_build_info gauge\n"
            "polar_build_info{version=\"0.1.0\",commit=\"abc123\",backend=\"cpu\"} 1\n");
  EXPECT_EQ(registry.AddInfo("polar_build", "h", {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddInfo("other_info", "h", {{"__x", "y"}}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(MetricsTest, EscapesHelpAndLabelValues) {
  MetricsRegistry registry;
  GaugeFamily* family = Unwrap(registry.AddGauge(
      {.name = "e", .help = "back\\slash \"quotes\" stay\nnew line", .label_names = {"v"}}));
  Unwrap(family->WithLabels({"a\\b \"q\"\nz"}))->Set(1);
  EXPECT_EQ(registry.RenderText(),
            "# HELP e back\\\\slash \"quotes\" stay\\nnew line\n"
            "# TYPE e gauge\n"
            "e{v=\"a\\\\b \\\"q\\\"\\nz\"} 1\n");
}

TEST(MetricsTest, FamiliesInRegistrationOrderChildrenSorted) {
  MetricsRegistry registry;
  GaugeFamily* zeta = Unwrap(registry.AddGauge({.name = "zeta", .help = "z", .label_names = {"layer"}}));
  Unwrap(registry.AddGauge({.name = "alpha", .help = "a"}));
  // Label values sort as strings: "10" before "2".
  for (const char* layer : {"2", "10", "0"}) Unwrap(zeta->WithLabels({layer}));
  EXPECT_EQ(registry.RenderText(),
            "# HELP zeta z\n"
            "# TYPE zeta gauge\n"
            "zeta{layer=\"0\"} 0\n"
            "zeta{layer=\"10\"} 0\n"
            "zeta{layer=\"2\"} 0\n"
            "# HELP alpha a\n"
            "# TYPE alpha gauge\n"
            "alpha 0\n");
}

TEST(MetricsTest, ConcurrentUpdatesGiveExactTotals) {
  MetricsRegistry registry;
  CounterFamily* counters = Unwrap(registry.AddCounter({.name = "c_total", .help = "h", .label_names = {"t"}}));
  GaugeFamily* gauge = Unwrap(registry.AddGauge({.name = "g", .help = "h"}));
  HistogramFamily* histogram = Unwrap(registry.AddHistogram({.name = "hist", .help = "h"}, {1, 2}));
  Counter* shared = Unwrap(counters->WithLabels({"shared"}));
  constexpr int kThreads = 8;
  constexpr int kIncrements = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Also creates children while others update and render.
      Counter* own = Unwrap(counters->WithLabels({"own" + std::to_string(t)}));
      for (int i = 0; i < kIncrements; ++i) {
        shared->Increment();
        own->Increment(2);
        gauge->Get().Increment(3);
        gauge->Get().Decrement(1);
        histogram->Get().Observe(static_cast<double>(i % 3));  // 0, 1, 2 -> le=1, le=1, le=2
        if (i % 20000 == 0) registry.RenderText();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  // All values are small integers, so every double sum is exact.
  EXPECT_EQ(shared->Value(), kThreads * kIncrements);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(Unwrap(counters->WithLabels({"own" + std::to_string(t)}))->Value(), 2.0 * kIncrements);
  }
  EXPECT_EQ(gauge->Get().Value(), 2.0 * kThreads * kIncrements);
  Histogram::Snapshot s = histogram->Get().Collect();
  const uint64_t total = uint64_t{kThreads} * kIncrements;
  uint64_t twos = 0;
  for (int i = 0; i < kIncrements; ++i) twos += (i % 3 == 2);
  EXPECT_EQ(s.count, total);
  EXPECT_EQ(s.cumulative_counts, std::vector<uint64_t>({total - kThreads * twos, total, total}));
  double expected_sum = 0;
  for (int i = 0; i < kIncrements; ++i) expected_sum += i % 3;
  EXPECT_EQ(s.sum, expected_sum * kThreads);
}

TEST(MetricsTest, ChildCapRefusesNewLabelValues) {
  MetricsRegistry registry;
  CounterFamily* family = Unwrap(
      registry.AddCounter({.name = "capped_total", .help = "h", .label_names = {"id"}, .max_children = 3}));
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(family->WithLabels({id}).ok());
  absl::StatusOr<Counter*> fourth = family->WithLabels({"d"});
  EXPECT_EQ(fourth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(fourth.status().message()), HasSubstr("capped_total"));
  // Existing children are still handed out.
  EXPECT_TRUE(family->WithLabels({"b"}).ok());
  EXPECT_EQ(family->num_children(), 3u);
  EXPECT_DEATH(family->Get(), "use WithLabels");
  EXPECT_EQ(registry.RenderText().find("id=\"d\""), std::string::npos);
  EXPECT_GE(kDefaultMaxChildren, 100u);
}

TEST(MetricsTest, RejectsInvalidNamesAndSpecs) {
  MetricsRegistry registry;
  auto code = [](const absl::Status& status) { return status.code(); };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  for (const char* bad : {"", "1abc", "a-b", "a b", "a.b", "é"}) {
    EXPECT_EQ(code(registry.AddGauge({.name = bad, .help = "h"}).status()), kInvalid) << bad;
  }
  EXPECT_TRUE(registry.AddGauge({.name = "ns:sub_name1", .help = "h"}).ok());  // colons are allowed in names
  for (const char* bad : {"", "1a", "a:b", "a-b", "__reserved", "__"}) {
    EXPECT_EQ(code(registry.AddGauge({.name = "g_label", .help = "h", .label_names = {bad}}).status()), kInvalid)
        << bad;
  }
  EXPECT_TRUE(registry.AddGauge({.name = "g_ok", .help = "h", .label_names = {"_a", "b_2"}}).ok());
  EXPECT_EQ(code(registry.AddGauge({.name = "g_dup", .help = "h", .label_names = {"a", "a"}}).status()), kInvalid);
  EXPECT_EQ(code(registry.AddGauge({.name = "g_nohelp", .help = ""}).status()), kInvalid);
  EXPECT_EQ(code(registry.AddGauge({.name = "g_badhelp", .help = "\xff"}).status()), kInvalid);
  EXPECT_EQ(code(registry.AddGauge({.name = "g_nocap", .help = "h", .max_children = 0}).status()), kInvalid);
  EXPECT_EQ(code(registry.AddCounter({.name = "requests", .help = "h"}).status()), kInvalid);  // no _total
  EXPECT_EQ(code(registry.AddHistogram({.name = "h_le", .help = "h", .label_names = {"le"}}, {1}).status()),
            kInvalid);
  EXPECT_TRUE(registry.AddGauge({.name = "g_le", .help = "h", .label_names = {"le"}}).ok());  // only histograms
  EXPECT_EQ(code(registry.AddHistogram({.name = "h_order", .help = "h"}, {1, 1}).status()), kInvalid);
  EXPECT_EQ(code(registry.AddHistogram({.name = "h_down", .help = "h"}, {2, 1}).status()), kInvalid);
  EXPECT_EQ(code(registry.AddHistogram({.name = "h_nan", .help = "h"}, {std::nan("")}).status()), kInvalid);
  EXPECT_EQ(code(registry.AddHistogram({.name = "h_inf", .help = "h"},
                                       {1, std::numeric_limits<double>::infinity()})
                     .status()),
            kInvalid);

  // Names collide with histograms' sample names too.
  ASSERT_TRUE(registry.AddHistogram({.name = "lat_seconds", .help = "h"}, {1}).ok());
  EXPECT_EQ(code(registry.AddGauge({.name = "lat_seconds", .help = "h"}).status()), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(code(registry.AddGauge({.name = "lat_seconds_count", .help = "h"}).status()),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(code(registry.AddGauge({.name = "g_ok", .help = "h"}).status()), absl::StatusCode::kAlreadyExists);

  // Label values: the right count, valid UTF-8 (any content otherwise).
  GaugeFamily* family = Unwrap(registry.AddGauge({.name = "two", .help = "h", .label_names = {"a", "b"}}));
  EXPECT_EQ(code(family->WithLabels({"x"}).status()), kInvalid);
  EXPECT_EQ(code(family->WithLabels({"x", "y", "z"}).status()), kInvalid);
  EXPECT_EQ(code(family->WithLabels({"x", "\xc3"}).status()), kInvalid);         // truncated
  EXPECT_EQ(code(family->WithLabels({"x", "\xc0\xaf"}).status()), kInvalid);     // overlong
  EXPECT_EQ(code(family->WithLabels({"x", "\xed\xa0\x80"}).status()), kInvalid); // surrogate
  EXPECT_TRUE(family->WithLabels({"", "héllo ✓ 😀"}).ok());
}

TEST(MetricsTest, ValuesRoundTrip) {
  for (double v : {0.0, 1.0, -2.5, 0.1, 1.0 / 3.0, 123456789.125, 1e-300, 5e-324, 1.7976931348623157e308,
                   0.0005 * 1024, 9007199254740993.0}) {
    std::string text = FormatMetricValue(v);
    EXPECT_EQ(std::strtod(text.c_str(), nullptr), v) << text;
  }
  // Laid out like Go's strconv.FormatFloat(v, 'g', -1, 64).
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(42), "42");
  EXPECT_EQ(FormatMetricValue(-0.0001), "-0.0001");
  EXPECT_EQ(FormatMetricValue(0.00001), "1e-05");
  EXPECT_EQ(FormatMetricValue(999999), "999999");
  EXPECT_EQ(FormatMetricValue(1e6), "1e+06");
  EXPECT_EQ(FormatMetricValue(1234567), "1.234567e+06");
}

TEST(MetricsTest, ExponentialBuckets) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), std::vector<double>({1, 2, 4, 8}));
  std::vector<double> latency = DefaultLatencyBuckets();
  ASSERT_EQ(latency.size(), 18u);
  EXPECT_EQ(FormatMetricValue(latency.front()), "0.0005");
  EXPECT_EQ(FormatMetricValue(latency[1]), "0.001");
  EXPECT_EQ(FormatMetricValue(latency.back()), "65.536");
  MetricsRegistry registry;
  EXPECT_TRUE(registry.AddHistogram({.name = "lat", .help = "h"}, latency).ok());
  EXPECT_DEATH(ExponentialBuckets(0, 2, 3), "start > 0");
}

// --- promtool: the real Prometheus parser and linter -------------------------

std::string FindPromtool() {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
    std::string path = std::string(dir) + "/promtool";
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

// `promtool check metrics` reads the exposition text on stdin; exit 0 and no
// output means it found neither parse errors nor lint problems.
CommandResult RunPromtool(const std::string& promtool, const std::string& text) {
  char path[] = "/tmp/polar_metrics_XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  {
    std::ofstream file(path);
    file << text;
  }
  close(fd);
  CommandResult result;
  std::string command = promtool + " check metrics < " + path + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  unlink(path);
  return result;
}

TEST(MetricsTest, PromtoolAcceptsEveryKind) {
  std::string promtool = FindPromtool();
  if (promtool.empty()) GTEST_SKIP() << "promtool not found: apt-get install prometheus (scripts/install-deps)";

  MetricsRegistry registry;
  CounterFamily* requests = Unwrap(registry.AddCounter({.name = "polar_requests_total",
                                                        .help = "Finished requests by code and reason.",
                                                        .label_names = {"code", "finish_reason"}}));
  Unwrap(requests->WithLabels({"OK", "stop"}))->Increment(12);
  Unwrap(requests->WithLabels({"RESOURCE_EXHAUSTED", ""}))->Increment();
  Unwrap(registry.AddCounter({.name = "polar_generation_tokens_total", .help = "Tokens generated."}))
      ->Get()
      .Increment(4096);
  CounterFamily* heads = Unwrap(registry.AddCounter(
      {.name = "polar_attention_heads_active_total", .help = "Active heads.", .label_names = {"layer"}}));
  Unwrap(heads->WithLabels({"0"}))->Increment(1e6);
  GaugeFamily* kv = Unwrap(registry.AddGauge({.name = "polar_kv_cache_usage_ratio", .help = "KV blocks in use."}));
  kv->Get().Set(0.375);
  GaugeFamily* odd = Unwrap(registry.AddGauge(
      {.name = "polar_test_escapes_ratio", .help = "Help with \\ and\nnewline.", .label_names = {"v"}}));
  Unwrap(odd->WithLabels({"quote \" backslash \\ newline \n ünï"}))->Set(std::nan(""));
  Unwrap(odd->WithLabels({"inf"}))->Set(-std::numeric_limits<double>::infinity());
  HistogramFamily* step = Unwrap(registry.AddHistogram(
      {.name = "polar_step_seconds", .help = "Engine step time.", .label_names = {"phase"}}, DefaultLatencyBuckets()));
  Unwrap(step->WithLabels({"decode"}))->Observe(0.012);
  Unwrap(step->WithLabels({"prefill"}))->Observe(0.3);
  HistogramFamily* batch =
      Unwrap(registry.AddHistogram({.name = "polar_batch_size", .help = "Sequences per step."},
                                   ExponentialBuckets(1, 2, 10)));
  batch->Get().Observe(17);
  // A family whose children have not been created yet: header lines only.
  Unwrap(registry.AddGauge({.name = "polar_test_empty_ratio", .help = "No children yet.", .label_names = {"a"}}));
  ASSERT_TRUE(registry.AddCallbackGauge({.name = "polar_gateway_queue_size", .help = "Queued requests."},
                                        [] { return 5.0; })
                  .ok());
  ASSERT_TRUE(registry.AddInfo("polar_build_info", "Build facts.", {{"version", "0.1.0"}, {"commit", "deadbeef"}})
                  .ok());

  std::string text = registry.RenderText();
  CommandResult result = RunPromtool(promtool, text);
  EXPECT_EQ(result.exit_code, 0) << result.output << "\n--- input ---\n" << text;
  EXPECT_EQ(result.output, "") << "\n--- input ---\n" << text;
}

// The harness itself must be able to fail: promtool flags text it dislikes.
TEST(MetricsTest, PromtoolRejectsBadText) {
  std::string promtool = FindPromtool();
  if (promtool.empty()) GTEST_SKIP() << "promtool not found: apt-get install prometheus (scripts/install-deps)";
  CommandResult lint = RunPromtool(promtool, "# HELP requests x\n# TYPE requests counter\nrequests 1\n");
  EXPECT_NE(lint.exit_code, 0);
  EXPECT_THAT(lint.output, HasSubstr("_total"));
  CommandResult parse = RunPromtool(promtool, "# TYPE x gauge\nx{a=\"unterminated} 1\n");
  EXPECT_NE(parse.exit_code, 0);
}

}  // namespace
}  // namespace polar
