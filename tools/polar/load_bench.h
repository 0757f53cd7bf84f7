// The serving load generator behind `polar bench --concurrency/--rate`: one
// workload, two ways to send it. Through a polar-gateway over gRPC
// (--target, remote_bench.cc) or straight into the engine's Scheduler in
// this process (--model, engine_load_bench.cc), so "the gateway and worker"
// and "the engine alone" are measured on exactly the same requests.
//
// Request i's prompt (random token ids), output length and sampling seed
// derive from (--seed, i) only, so a run's workload does not depend on
// timing. Closed loop: --concurrency N clients, each sending its next request
// when the previous one ended. Open loop: --rate R requests/s, Poisson
// arrivals. The report (stdout table, --json FILE) holds throughput and TTFT,
// inter-token and end-to-end latency percentiles, all measured client side.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/polar/args.h"

namespace polar::cli {

struct LoadConfig {
  int64_t concurrency = 0;  // closed loop when > 0
  double rate = 0;          // open loop when > 0
  int64_t requests = 0;     // 0: bounded by duration only
  double duration_s = 0;    // 0: bounded by requests only
  int64_t prompt_tokens = 0;
  double prompt_spread = 0;
  int64_t output_tokens = 0;
  double output_spread = 0;
  uint64_t seed = 0;
  double timeout_s = 0;
  std::string json_path;
};

// The load flags shared by both ways (see main.cc's usage).
inline constexpr const char* kLoadFlags[] = {"concurrency",          "rate",   "requests", "duration",
                                             "prompt-tokens",        "prompt-tokens-spread", "output-tokens",
                                             "output-tokens-spread", "seed",   "timeout",  "json"};
absl::StatusOr<LoadConfig> ParseLoadConfig(const Args& args);

// One request of the workload.
struct LoadRequest {
  std::vector<int32_t> prompt;
  int32_t max_tokens = 0;  // generated exactly (EOS ignored)
  uint64_t seed = 0;       // sampling seed (default sampling otherwise)
};
LoadRequest MakeLoadRequest(const LoadConfig& config, int32_t vocab_size, int64_t index);

// What one request measured, client side.
class RequestTimer {
 public:
  RequestTimer() : start_(Clock::now()) {}
  // `n` tokens arrived now (one message or event).
  void OnTokens(int n);

  std::string code = "OK";  // a gRPC-style status code name
  std::string error;
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  double ttft_s = -1;  // < 0: no token arrived
  double e2e_s = 0;    // set by Finish()
  std::vector<double> itl_s;  // per token after the first message's
  void Finish() { e2e_s = std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_;
  Clock::time_point last_tokens_;
};

// Sends the workload through `send` (called from many threads at once; it
// blocks until its request ended and returns what it measured), prints the
// report and writes --json. `label` names the target in the report. Fails
// when every request failed.
absl::Status RunLoad(const LoadConfig& config, const std::string& label, int32_t vocab_size,
                     const std::function<RequestTimer(const LoadRequest&)>& send);

// `polar bench --model PATH --concurrency N|--rate R ...`: the workload
// through an in-process Scheduler with the worker's default options.
absl::Status RunEngineLoadBench(const Args& args);

}  // namespace polar::cli
