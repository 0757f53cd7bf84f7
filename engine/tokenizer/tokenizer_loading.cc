// See tokenizer_loading.h.
#include "engine/tokenizer/tokenizer_loading.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/model/text_file.h"

namespace polar {
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

}  // namespace polar
