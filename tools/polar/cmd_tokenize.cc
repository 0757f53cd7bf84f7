// polar tokenize: token ids of a text as a JSON array.
#include <cstdio>

#include "absl/strings/str_join.h"
#include "tools/polar/commands.h"
#include "tools/polar/loaded_model.h"

namespace polar::cli {

absl::Status RunTokenize(const std::vector<std::string>& argv) {
  absl::StatusOr<Args> args = Args::Parse(argv, {"model"}, {"no-bos", "no-special"});
  if (!args.ok()) return args.status();
  if (args->positional().size() != 1) return absl::InvalidArgumentError("expected exactly one TEXT argument");
  if (!args->Has("model")) return absl::InvalidArgumentError("--model PATH is required");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizerFromPath(args->Get("model"));
  if (!tokenizer.ok()) return tokenizer.status();
  const std::vector<int32_t> ids = (*tokenizer)->Encode(args->positional()[0], !args->Has("no-bos"),
                                                        !args->Has("no-special"));
  std::printf("[%s]\n", absl::StrJoin(ids, ",").c_str());
  return absl::OkStatus();
}

}  // namespace polar::cli
