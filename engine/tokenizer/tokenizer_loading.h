// Finding and building a model's tokenizer: from its GGUF metadata, or from
// tokenizer.json (with tokenizer_config.json beside it, when present, for the
// special tokens and the chat template). Shared by the CLI and the worker.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model/checkpoint.h"
#include "engine/tokenizer/tokenizer.h"

namespace polar {

// The tokenizer of an opened checkpoint; NOT_FOUND when it has none.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const Checkpoint& checkpoint);

// The tokenizer alone, without opening the weights: a .gguf file (a
// vocabulary-only GGUF will do) or a directory with tokenizer.json.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromPath(const std::string& path);

}  // namespace polar
