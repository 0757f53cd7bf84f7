// See loaded_model.h.
#include "tools/polar/loaded_model.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/model/text_file.h"

namespace polar::cli {

namespace {

absl::StatusOr<std::unique_ptr<Tokenizer>> FromTokenizerJsonFile(const std::string& json_path) {
  absl::StatusOr<std::string> json = ReadTextFile(json_path);
  if (!json.ok()) return json.status();
  const std::filesystem::path config_path =
      std::filesystem::path(json_path).parent_path() / "tokenizer_config.json";
  std::string config;
  if (std::filesystem::exists(config_path)) {
    absl::StatusOr<std::string> text = ReadTextFile(config_path.string());
    if (!text.ok()) return text.status();
    config = *text;
  }
  return Tokenizer::FromTokenizerJson(*json, json_path, config);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const Checkpoint& checkpoint) {
  if (checkpoint.gguf != nullptr) return Tokenizer::FromGguf(*checkpoint.gguf);
  if (checkpoint.tokenizer_json_path.empty()) {
    return absl::NotFoundError(absl::StrCat(checkpoint.path, ": no tokenizer (no tokenizer.json)"));
  }
  return FromTokenizerJsonFile(checkpoint.tokenizer_json_path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromPath(const std::string& path) {
  if (std::filesystem::is_directory(path)) {
    const std::string json_path = (std::filesystem::path(path) / "tokenizer.json").string();
    if (!std::filesystem::exists(json_path)) {
      return absl::NotFoundError(absl::StrCat(path, ": no tokenizer (no tokenizer.json)"));
    }
    return FromTokenizerJsonFile(json_path);
  }
  absl::StatusOr<std::shared_ptr<const GgufFile>> gguf = GgufFile::Open(path);
  if (!gguf.ok()) return gguf.status();
  return Tokenizer::FromGguf(**gguf);
}

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
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner = ModelRunner::Create(std::move(*checkpoint), options);
  if (!runner.ok()) return runner.status();
  loaded.runner = std::move(*runner);
  return loaded;
}

}  // namespace polar::cli
