// See loaded_model.h.
#include "tools/polar/loaded_model.h"

#include "absl/strings/str_cat.h"

namespace polar::cli {

absl::StatusOr<LoadedModel> LoadModel(const Args& args, bool with_tokenizer) {
  const std::string path = args.Get("model");
  if (path.empty()) return absl::InvalidArgumentError("--model PATH is required");
  absl::StatusOr<Checkpoint> checkpoint = OpenCheckpoint(path);
  if (!checkpoint.ok()) return checkpoint.status();
  LoadedModel loaded;
  if (with_tokenizer) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(*checkpoint);
    if (!tokenizer.ok()) return tokenizer.status();
    loaded.tokenizer = std::move(*tokenizer);
  }
  RunnerOptions options;
  absl::StatusOr<int64_t> threads = args.GetInt("threads", 0);
  absl::StatusOr<int64_t> kv_bytes = args.GetInt("kv-cache-bytes", options.kv_cache_bytes);
  absl::StatusOr<int64_t> step_tokens = args.GetInt("max-batch-tokens", options.max_batch_tokens);
  for (const auto* s : {&threads, &kv_bytes, &step_tokens}) {
    if (!s->ok()) return s->status();
  }
  options.threads = static_cast<int32_t>(*threads);
  options.kv_cache_bytes = *kv_bytes;
  options.max_batch_tokens = static_cast<int32_t>(*step_tokens);
  options.head_routers = args.Get("routers");
  options.mlp_routers = args.Get("mlp-routers");  // absent unless the command accepts --mlp-routers
  absl::StatusOr<double> default_density = args.GetDouble("default-density", 0.0);
  if (!default_density.ok()) return default_density.status();
  options.default_density = static_cast<float>(*default_density);
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner = ModelRunner::Create(std::move(*checkpoint), options);
  if (!runner.ok()) return runner.status();
  loaded.runner = std::move(*runner);
  return loaded;
}

}  // namespace polar::cli
