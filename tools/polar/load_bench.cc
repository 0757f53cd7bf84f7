// See load_bench.h. One thread per in-flight request (blocking senders):
// simple, and cheap enough for the few hundred concurrent requests a
// benchmark of one gateway or engine needs.
#include "tools/polar/load_bench.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace polar::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// A length drawn uniformly from base * [1 - spread, 1 + spread], at least 1.
int64_t SpreadLength(int64_t base, double spread, std::mt19937_64& rng) {
  if (spread <= 0) return base;
  std::uniform_real_distribution<double> factor(1.0 - spread, 1.0 + spread);
  return std::max<int64_t>(1, std::llround(static_cast<double>(base) * factor(rng)));
}

// Collects results and reports progress.
class ResultSink {
 public:
  void Add(RequestTimer result) {
    absl::MutexLock lock(&mutex_);
    results_.push_back(std::move(result));
  }
  int64_t count() {
    absl::MutexLock lock(&mutex_);
    return static_cast<int64_t>(results_.size());
  }
  std::vector<RequestTimer> Take() {
    absl::MutexLock lock(&mutex_);
    return std::move(results_);
  }

 private:
  absl::Mutex mutex_;
  std::vector<RequestTimer> results_ ABSL_GUARDED_BY(mutex_);
};

// Nearest-rank percentile of sorted `v` (0 when empty).
double Percentile(const std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

nlohmann::json Distribution(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  return {{"count", v.size()},
          {"mean", v.empty() ? 0.0 : sum / static_cast<double>(v.size())},
          {"p50", Percentile(v, 50)},
          {"p90", Percentile(v, 90)},
          {"p99", Percentile(v, 99)}};
}

// Prints "done/total" (or done and elapsed) to stderr until `stop`: a
// rewritten line on a terminal, a line every 5 s otherwise (logs).
void ReportProgress(ResultSink& sink, int64_t total, double duration_s, Clock::time_point start,
                    const std::atomic<bool>& stop) {
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto period = tty ? std::chrono::milliseconds(200) : std::chrono::milliseconds(5000);
  Clock::time_point next = Clock::now() + period;
  while (!stop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (Clock::now() < next) continue;
    next += period;
    const int64_t done = sink.count();
    const double elapsed = Seconds(Clock::now() - start);
    double fraction = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : elapsed / duration_s;
    fraction = std::clamp(fraction, 0.0, 1.0);
    if (tty) {
      const int width = 30, filled = static_cast<int>(fraction * width);
      std::fprintf(stderr, "\r[%s%s] %lld%s done, %.1fs", std::string(filled, '#').c_str(),
                   std::string(width - filled, ' ').c_str(), static_cast<long long>(done),
                   total > 0 ? absl::StrCat("/", total).c_str() : "", elapsed);
    } else {
      std::fprintf(stderr, "bench: %lld%s requests done, %.1fs\n", static_cast<long long>(done),
                   total > 0 ? absl::StrCat("/", total).c_str() : "", elapsed);
    }
    std::fflush(stderr);
  }
  if (tty) std::fputc('\n', stderr);
}

}  // namespace

absl::StatusOr<LoadConfig> ParseLoadConfig(const Args& args) {
  LoadConfig c;
  absl::StatusOr<int64_t> concurrency = args.GetInt("concurrency", 0);
  absl::StatusOr<double> rate = args.GetDouble("rate", 0);
  absl::StatusOr<int64_t> requests = args.GetInt("requests", 0);
  absl::StatusOr<double> duration = args.GetDouble("duration", 0);
  absl::StatusOr<int64_t> prompt = args.GetInt("prompt-tokens", 128);
  absl::StatusOr<double> prompt_spread = args.GetDouble("prompt-tokens-spread", 0);
  absl::StatusOr<int64_t> output = args.GetInt("output-tokens", 128);
  absl::StatusOr<double> output_spread = args.GetDouble("output-tokens-spread", 0);
  absl::StatusOr<int64_t> seed = args.GetInt("seed", 0);
  absl::StatusOr<double> timeout = args.GetDouble("timeout", 60);
  for (const absl::Status& s : {concurrency.status(), rate.status(), requests.status(), duration.status(),
                                prompt.status(), prompt_spread.status(), output.status(), output_spread.status(),
                                seed.status(), timeout.status()}) {
    if (!s.ok()) return s;
  }
  if (*concurrency > 0 && *rate > 0) return absl::InvalidArgumentError("give --concurrency or --rate, not both");
  if (*concurrency < 0 || *rate < 0) return absl::InvalidArgumentError("--concurrency and --rate must be > 0");
  c.concurrency = (*concurrency == 0 && *rate == 0) ? 1 : *concurrency;
  if (c.concurrency > 1024) return absl::InvalidArgumentError("--concurrency is at most 1024");
  c.rate = *rate;
  if (*requests < 0 || *duration < 0) return absl::InvalidArgumentError("--requests and --duration must be > 0");
  c.requests = (*requests == 0 && *duration == 0) ? 100 : *requests;
  c.duration_s = *duration;
  if (*prompt < 1 || *output < 1) return absl::InvalidArgumentError("--prompt-tokens and --output-tokens must be >= 1");
  if (*prompt_spread < 0 || *prompt_spread >= 1 || *output_spread < 0 || *output_spread >= 1) {
    return absl::InvalidArgumentError("--prompt-tokens-spread and --output-tokens-spread must be in [0, 1)");
  }
  if (*timeout <= 0) return absl::InvalidArgumentError("--timeout must be > 0");
  c.prompt_tokens = *prompt;
  c.prompt_spread = *prompt_spread;
  c.output_tokens = *output;
  c.output_spread = *output_spread;
  c.seed = static_cast<uint64_t>(*seed);
  c.timeout_s = *timeout;
  c.json_path = args.Get("json");
  return c;
}

LoadRequest MakeLoadRequest(const LoadConfig& config, int32_t vocab_size, int64_t index) {
  std::seed_seq seq{static_cast<uint32_t>(config.seed), static_cast<uint32_t>(config.seed >> 32),
                    static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32)};
  std::mt19937_64 rng(seq);
  LoadRequest request;
  const int64_t prompt_len = SpreadLength(config.prompt_tokens, config.prompt_spread, rng);
  const int64_t output_len = SpreadLength(config.output_tokens, config.output_spread, rng);
  std::uniform_int_distribution<int32_t> token(0, vocab_size - 1);
  for (int64_t i = 0; i < prompt_len; ++i) request.prompt.push_back(token(rng));
  request.max_tokens = static_cast<int32_t>(output_len);
  request.seed = rng();
  return request;
}

void RequestTimer::OnTokens(int n) {
  if (n <= 0) return;
  const Clock::time_point now = Clock::now();
  if (ttft_s < 0) {
    ttft_s = Seconds(now - start_);
  } else {
    // A message carrying n tokens spreads its gap over them.
    const double per_token = Seconds(now - last_tokens_) / n;
    for (int i = 0; i < n; ++i) itl_s.push_back(per_token);
  }
  last_tokens_ = now;
  output_tokens += n;
}

absl::Status RunLoad(const LoadConfig& config, const std::string& label, int32_t vocab_size,
                     const std::function<RequestTimer(const LoadRequest&)>& send) {
  ResultSink sink;
  std::atomic<int64_t> next_index{0};
  const Clock::time_point start = Clock::now();
  const Clock::time_point end_by =
      config.duration_s > 0 ? start + std::chrono::microseconds(static_cast<int64_t>(config.duration_s * 1e6))
                            : Clock::time_point::max();
  // The next request's index, or -1 once --requests were sent or --duration passed.
  auto claim = [&]() -> int64_t {
    if (Clock::now() >= end_by) return -1;
    const int64_t i = next_index.fetch_add(1);
    return (config.requests > 0 && i >= config.requests) ? -1 : i;
  };
  auto run = [&](int64_t index) { sink.Add(send(MakeLoadRequest(config, vocab_size, index))); };

  std::atomic<bool> stop_progress{false};
  std::thread progress(ReportProgress, std::ref(sink), config.requests, config.duration_s, start,
                       std::cref(stop_progress));
  std::vector<std::thread> clients;
  if (config.rate > 0) {
    // Open loop: Poisson arrivals, each request on its own thread whatever
    // is still in flight.
    std::mt19937_64 arrivals(config.seed ^ 0x9e3779b97f4a7c15ULL);
    std::exponential_distribution<double> gap(config.rate);
    Clock::time_point at = start;
    for (int64_t index = claim(); index >= 0; index = claim()) {
      std::this_thread::sleep_until(at);
      if (Clock::now() >= end_by) break;
      clients.emplace_back(run, index);
      at += std::chrono::microseconds(static_cast<int64_t>(gap(arrivals) * 1e6));
    }
  } else {
    // Closed loop: each client sends its next request when the previous ended.
    for (int64_t c = 0; c < config.concurrency; ++c) {
      clients.emplace_back([&] {
        for (int64_t index = claim(); index >= 0; index = claim()) run(index);
      });
    }
  }
  for (std::thread& t : clients) t.join();
  const double wall_s = Seconds(Clock::now() - start);
  stop_progress.store(true);
  progress.join();

  // Aggregate.
  std::vector<RequestTimer> results = sink.Take();
  std::map<std::string, int64_t> failed_by_code;
  std::vector<double> ttft, itl, e2e;
  int64_t ok = 0, output_tokens = 0, prompt_tokens = 0;
  std::string first_error;
  for (const RequestTimer& r : results) {
    if (r.code != "OK") {
      ++failed_by_code[r.code];
      if (first_error.empty()) first_error = absl::StrCat(r.code, ": ", r.error);
      continue;
    }
    ++ok;
    output_tokens += r.output_tokens;
    prompt_tokens += r.prompt_tokens;
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    e2e.push_back(r.e2e_s);
  }
  int64_t failed = 0;
  for (const auto& [code, n] : failed_by_code) failed += n;
  nlohmann::json report = {
      {"target", label},
      {"mode", config.rate > 0 ? "open_loop" : "closed_loop"},
      {"concurrency", config.concurrency},
      {"rate", config.rate},
      {"seed", config.seed},
      {"requests_ok", ok},
      {"requests_failed", failed},
      {"failed_by_code", failed_by_code},
      {"wall_s", wall_s},
      {"request_throughput", static_cast<double>(ok) / wall_s},
      {"prompt_tokens", prompt_tokens},
      {"output_tokens", output_tokens},
      {"output_tokens_per_s", static_cast<double>(output_tokens) / wall_s},
      {"total_tokens_per_s", static_cast<double>(prompt_tokens + output_tokens) / wall_s},
      {"ttft_s", Distribution(ttft)},
      {"itl_s", Distribution(itl)},
      {"e2e_s", Distribution(e2e)},
  };

  std::printf("%-24s %lld\n", "requests ok", static_cast<long long>(ok));
  std::printf("%-24s %lld\n", "requests failed", static_cast<long long>(failed));
  for (const auto& [code, n] : failed_by_code) {
    std::printf("  %-22s %lld\n", code.c_str(), static_cast<long long>(n));
  }
  std::printf("%-24s %.3f\n", "wall time (s)", wall_s);
  std::printf("%-24s %.3f\n", "requests/s", report["request_throughput"].get<double>());
  std::printf("%-24s %lld\n", "prompt tokens", static_cast<long long>(prompt_tokens));
  std::printf("%-24s %lld\n", "output tokens", static_cast<long long>(output_tokens));
  std::printf("%-24s %.2f\n", "output tokens/s", report["output_tokens_per_s"].get<double>());
  std::printf("%-24s %.2f\n", "total tokens/s", report["total_tokens_per_s"].get<double>());
  std::printf("%-24s %10s %10s %10s %10s\n", "latency (ms)", "mean", "p50", "p90", "p99");
  for (const char* name : {"ttft_s", "itl_s", "e2e_s"}) {
    const nlohmann::json& d = report[name];
    std::printf("%-24s %10.2f %10.2f %10.2f %10.2f\n",
                std::string(name).substr(0, std::string(name).size() - 2).c_str(), 1e3 * d["mean"].get<double>(),
                1e3 * d["p50"].get<double>(), 1e3 * d["p90"].get<double>(), 1e3 * d["p99"].get<double>());
  }
  std::fflush(stdout);

  if (!config.json_path.empty()) {
    std::ofstream out(config.json_path);
    out << report.dump(2) << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write --json file ", config.json_path));
  }
  if (ok == 0) {
    return absl::UnavailableError(absl::StrCat("every request to ", label, " failed (first: ", first_error, ")"));
  }
  return absl::OkStatus();
}

}  // namespace polar::cli
