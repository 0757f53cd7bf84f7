// polar bench (in-process): prefill and decode throughput of the engine at a
// given batch size, with random prompt tokens and greedy decoding that ignores
// EOS so every sequence generates exactly --gen-tokens tokens. With
// --concurrency/--rate it runs a serving load instead (load_bench.h): through
// a polar-gateway with --target HOST:PORT, or into this process's engine.
#include <chrono>
#include <cstdio>
#include <iterator>
#include <set>
#include <string>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cpu/threads.h"
#include "tools/polar/commands.h"
#include "tools/polar/load_bench.h"
#include "tools/polar/loaded_model.h"
#include "tools/polar/remote_bench.h"

namespace polar::cli {

absl::Status RunBench(const std::vector<std::string>& argv) {
  std::set<std::string> flags = {"model", "target", "batch", "gen-tokens", "threads", "kv-cache-bytes",
                                    "max-batch-tokens", "max-num-seqs"};
  flags.insert(std::begin(kLoadFlags), std::end(kLoadFlags));
  absl::StatusOr<Args> args = Args::Parse(argv, flags, {});
  if (!args.ok()) return args.status();
  const bool load_mode = args->Has("target") || args->Has("concurrency") || args->Has("rate");
  if (args->Has("target")) {
    if (args->Has("model")) return absl::InvalidArgumentError("give --model or --target, not both");
    for (const char* local : {"batch", "gen-tokens", "threads", "kv-cache-bytes", "max-batch-tokens", "max-num-seqs"}) {
      if (args->Has(local)) return absl::InvalidArgumentError(absl::StrCat("--", local, " is not used with --target"));
    }
    return RunRemoteBench(*args);
  }
  if (load_mode) {
    for (const char* batch_only : {"batch", "gen-tokens"}) {
      if (args->Has(batch_only)) {
        return absl::InvalidArgumentError(absl::StrCat("--", batch_only, " is not used with --concurrency/--rate"));
      }
    }
    return RunEngineLoadBench(*args);
  }
  for (const char* load : kLoadFlags) {
    if (std::string(load) == "prompt-tokens") continue;
    if (args->Has(load)) {
      return absl::InvalidArgumentError(absl::StrCat("--", load, " needs --concurrency or --rate (or --target)"));
    }
  }
  if (args->Has("max-num-seqs")) return absl::InvalidArgumentError("--max-num-seqs needs --concurrency or --rate");
  absl::StatusOr<int64_t> batch = args->GetInt("batch", 1);
  absl::StatusOr<int64_t> prompt_tokens = args->GetInt("prompt-tokens", 32);
  absl::StatusOr<int64_t> gen_tokens = args->GetInt("gen-tokens", 64);
  for (absl::Status s : {batch.status(), prompt_tokens.status(), gen_tokens.status()}) {
    if (!s.ok()) return s;
  }
  if (*batch < 1 || *prompt_tokens < 1 || *gen_tokens < 2) {
    return absl::InvalidArgumentError("--batch >= 1, --prompt-tokens >= 1, --gen-tokens >= 2");
  }
  absl::StatusOr<LoadedModel> model = LoadModel(*args, /*with_tokenizer=*/false);
  if (!model.ok()) return model.status();
  ModelRunner& runner = *model->runner;

  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(runner.config().vocab_size) - 1);
  std::vector<GenerationRequest> requests(*batch);
  for (GenerationRequest& r : requests) {
    for (int64_t i = 0; i < *prompt_tokens; ++i) r.prompt.push_back(token(rng));
    r.params.temperature = 0.0f;
    r.params.ignore_eos = true;
    r.params.max_tokens = static_cast<int32_t>(*gen_tokens);
  }
  // Decode time runs from the moment every sequence has its first token (all
  // prompts prefilled) to the last token.
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  Clock::time_point prefill_done;
  int64_t first_tokens = 0, total_tokens = 0;
  std::vector<bool> started(*batch, false);
  auto on_token = [&](size_t i, int32_t) {
    ++total_tokens;
    if (!started[i]) {
      started[i] = true;
      if (++first_tokens == *batch) prefill_done = Clock::now();
    }
    return true;
  };
  absl::StatusOr<std::vector<GenerationResult>> results = runner.Generate(requests, {}, on_token);
  if (!results.ok()) return results.status();
  const Clock::time_point end = Clock::now();
  const double prefill_s = std::chrono::duration<double>(prefill_done - start).count();
  const double decode_s = std::chrono::duration<double>(end - prefill_done).count();
  const int64_t decode_tokens = total_tokens - *batch;
  std::printf(
      "{\"model\": \"%s\", \"backend\": \"cpu\", \"threads\": %d, \"batch\": %lld, \"prompt_tokens\": %lld, "
      "\"gen_tokens\": %lld, \"prefill_s\": %.4f, \"prefill_tokens_per_s\": %.2f, \"decode_s\": %.4f, "
      "\"decode_tokens_per_s\": %.2f}\n",
      args->Get("model").c_str(), kernels::cpu::NumThreads(), static_cast<long long>(*batch),
      static_cast<long long>(*prompt_tokens), static_cast<long long>(*gen_tokens), prefill_s,
      *batch * *prompt_tokens / prefill_s, decode_s, decode_tokens / decode_s);
  return absl::OkStatus();
}

}  // namespace polar::cli
