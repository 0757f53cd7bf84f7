// polar logits: teacher-forced logits of given token ids, for comparisons with
// reference implementations (tests/reference/).
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/model/text_file.h"
#include "nlohmann/json.hpp"
#include "tools/polar/commands.h"
#include "tools/polar/loaded_model.h"

namespace polar::cli {

absl::Status RunLogits(const std::vector<std::string>& argv) {
  absl::StatusOr<Args> args =
      Args::Parse(argv, {"model", "tokens", "out", "chunk", "threads", "kv-cache-bytes", "max-batch-tokens"}, {});
  if (!args.ok()) return args.status();
  if (!args->Has("tokens") || !args->Has("out")) {
    return absl::InvalidArgumentError("--tokens FILE.json and --out FILE.f32 are required");
  }
  absl::StatusOr<std::string> text = ReadTextFile(args->Get("tokens"));
  if (!text.ok()) return text.status();
  const nlohmann::json parsed = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_array()) return absl::InvalidArgumentError(absl::StrCat(args->Get("tokens"), ": not a JSON array"));
  std::vector<int32_t> tokens;
  for (const auto& v : parsed) {
    if (!v.is_number_integer()) return absl::InvalidArgumentError(absl::StrCat(args->Get("tokens"), ": non-integer id"));
    tokens.push_back(v.get<int32_t>());
  }
  absl::StatusOr<int64_t> chunk = args->GetInt("chunk", 256);
  if (!chunk.ok()) return chunk.status();
  absl::StatusOr<LoadedModel> model = LoadModel(*args, /*with_tokenizer=*/false);
  if (!model.ok()) return model.status();
  absl::StatusOr<std::vector<float>> logits = model->runner->ScoreTokens(tokens, static_cast<int32_t>(*chunk));
  if (!logits.ok()) return logits.status();
  std::ofstream out(args->Get("out"), std::ios::binary);
  out.write(reinterpret_cast<const char*>(logits->data()), sizeof(float) * logits->size());
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", args->Get("out")));
  std::fprintf(stderr, "wrote [%zu, %lld] float32 logits to %s\n", tokens.size(),
               static_cast<long long>(model->runner->config().vocab_size), args->Get("out").c_str());
  return absl::OkStatus();
}

}  // namespace polar::cli
