// Opening a model for the CLI: checkpoint, tokenizer and (optionally) a
// ModelRunner, with the runner options taken from common flags.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/runtime/model_runner.h"
#include "engine/tokenizer/tokenizer_loading.h"
#include "tools/polar/args.h"

namespace polar::cli {

struct LoadedModel {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ModelRunner> runner;
};

// Opens --model; reads --threads, --kv-cache-bytes, --max-batch-tokens,
// --routers and --default-density (absent flags: the RunnerOptions defaults).
absl::StatusOr<LoadedModel> LoadModel(const Args& args, bool with_tokenizer);

}  // namespace polar::cli
