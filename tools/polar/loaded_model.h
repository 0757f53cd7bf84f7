// Opening a model for the CLI: checkpoint, tokenizer and (optionally) a
// ModelRunner, with the runner options taken from common flags.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/runtime/model_runner.h"
#include "engine/tokenizer/tokenizer.h"
#include "tools/polar/args.h"

namespace polar::cli {

struct LoadedModel {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ModelRunner> runner;
};

// The tokenizer of a checkpoint: its GGUF metadata, or its tokenizer.json
// (with tokenizer_config.json beside it, when present, for the special
// tokens and the chat template).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const Checkpoint& checkpoint);

// The tokenizer alone, without opening the weights: a .gguf file (a
// vocabulary-only GGUF will do) or a directory with tokenizer.json.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromPath(const std::string& path);

// Opens --model; reads --threads, --kv-cache-bytes and --max-batch-tokens.
absl::StatusOr<LoadedModel> LoadModel(const Args& args, bool with_tokenizer);

}  // namespace polar::cli
