// See load_bench.h: the load sent straight into a Scheduler in this process,
// configured as polar-worker configures its own (same flags, same
// defaults), so that comparing it with `--target` through a gateway and a
// worker isolates what the two services and gRPC cost. Token times are taken
// on the engine thread as each event is emitted: the earliest any client of
// this engine could see them.
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "engine/runtime/scheduler.h"
#include "tools/polar/load_bench.h"
#include "tools/polar/loaded_model.h"

namespace polar::cli {

absl::Status RunEngineLoadBench(const Args& args) {
  absl::StatusOr<LoadConfig> config = ParseLoadConfig(args);
  if (!config.ok()) return config.status();
  absl::StatusOr<int64_t> max_num_seqs = args.GetInt("max-num-seqs", 256);  // polar-worker's default
  if (!max_num_seqs.ok()) return max_num_seqs.status();
  if (*max_num_seqs < 1) return absl::InvalidArgumentError("--max-num-seqs must be >= 1");
  absl::StatusOr<LoadedModel> model = LoadModel(args, /*with_tokenizer=*/false);
  if (!model.ok()) return model.status();
  ModelRunner& runner = *model->runner;

  SchedulerOptions options;
  options.max_batch_tokens = runner.options().max_batch_tokens;
  options.max_num_seqs = static_cast<int32_t>(*max_num_seqs);
  options.end_of_generation_ids = runner.config().eos_token_ids;
  Scheduler scheduler(runner, options);
  scheduler.Start();

  std::atomic<uint64_t> next_id{1};
  const absl::Duration timeout = absl::Seconds(config->timeout_s);
  auto send = [&](const LoadRequest& load) {
    // Written by the engine thread until `done`, read by this one after.
    struct Pending {
      RequestTimer timer;
      absl::Notification done;
    };
    auto pending = std::make_shared<Pending>();
    pending->timer.prompt_tokens = static_cast<int64_t>(load.prompt.size());
    SequenceRequest request;
    request.id = next_id.fetch_add(1);
    request.prompt = load.prompt;
    request.params.seed = load.seed;
    request.params.max_tokens = load.max_tokens;
    request.params.ignore_eos = true;
    request.deadline = absl::Now() + timeout;
    request.on_event = [pending](const TokenEvent& event) {
      if (event.token >= 0) pending->timer.OnTokens(1);
      if (!event.finished) return;
      pending->timer.Finish();
      if (!event.status.ok()) {
        pending->timer.code = absl::StatusCodeToString(event.status.code());
        pending->timer.error = std::string(event.status.message());
      }
      pending->done.Notify();
    };
    if (absl::Status status = scheduler.Submit(std::move(request)); !status.ok()) {
      RequestTimer refused;
      refused.Finish();
      refused.code = absl::StatusCodeToString(status.code());
      refused.error = std::string(status.message());
      return refused;
    }
    pending->done.WaitForNotification();
    return pending->timer;
  };
  absl::Status status = RunLoad(*config, absl::StrCat("engine:", args.Get("model")),
                                static_cast<int32_t>(runner.config().vocab_size), send);
  scheduler.Stop();
  return status;
}

}  // namespace polar::cli
