// polar generate: streams a completion from the in-process engine.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "tools/polar/commands.h"
#include "tools/polar/loaded_model.h"
#include "tools/polar/remote_generate.h"

namespace polar::cli {

absl::Status RunGenerate(const std::vector<std::string>& argv) {
  absl::StatusOr<Args> args = Args::Parse(
      argv,
      {"model", "max-tokens", "temperature", "top-k", "top-p", "repetition-penalty", "seed", "threads",
       "kv-cache-bytes", "max-batch-tokens", "target", "timeout", "routers", "density"},
      {"chat", "ignore-eos"});
  if (!args.ok()) return args.status();
  if (args->positional().size() != 1) {
    return absl::InvalidArgumentError("expected exactly one PROMPT argument (quote it)");
  }
  const std::string& prompt = args->positional()[0];
  if (prompt.empty()) return absl::InvalidArgumentError("empty PROMPT");

  SamplingParams params;
  absl::StatusOr<int64_t> max_tokens = args->GetInt("max-tokens", 128);
  absl::StatusOr<double> temperature = args->GetDouble("temperature", 1.0);
  absl::StatusOr<int64_t> top_k = args->GetInt("top-k", 0);
  absl::StatusOr<double> top_p = args->GetDouble("top-p", 1.0);
  absl::StatusOr<double> penalty = args->GetDouble("repetition-penalty", 1.0);
  absl::StatusOr<int64_t> seed = args->GetInt("seed", 0);
  for (absl::Status s : {max_tokens.status(), temperature.status(), top_k.status(), top_p.status(),
                         penalty.status(), seed.status()}) {
    if (!s.ok()) return s;
  }
  params.max_tokens = static_cast<int32_t>(*max_tokens);
  params.temperature = static_cast<float>(*temperature);
  params.top_k = static_cast<int32_t>(*top_k);
  params.top_p = static_cast<float>(*top_p);
  params.repetition_penalty = static_cast<float>(*penalty);
  params.seed = static_cast<uint64_t>(*seed);
  params.ignore_eos = args->Has("ignore-eos");
  if (args->Has("target")) {
    if (args->Has("model")) return absl::InvalidArgumentError("give --model or --target, not both");
    if (args->Has("routers") || args->Has("density")) {
      return absl::InvalidArgumentError("--routers and --density apply to --model (a gateway's workers load routers)");
    }
    return RunRemoteGenerate(*args, params);
  }

  absl::StatusOr<LoadedModel> model = LoadModel(*args, /*with_tokenizer=*/true);
  if (!model.ok()) return model.status();
  const Tokenizer& tokenizer = *model->tokenizer;
  if (absl::Status s = params.Validate(tokenizer.vocab_size()); !s.ok()) return s;

  std::string text = prompt;
  if (args->Has("chat")) {
    const ChatMessage message{"user", prompt};
    absl::StatusOr<std::string> rendered =
        ApplyChatTemplate(tokenizer, std::span(&message, 1), /*add_generation_prompt=*/true);
    if (!rendered.ok()) return rendered.status();
    text = *rendered;
  }
  GenerationRequest request;
  request.prompt = tokenizer.Encode(text, /*add_bos=*/true, /*parse_special=*/args->Has("chat"));
  request.params = params;
  absl::StatusOr<double> density = args->GetDouble("density", 0.0);  // 0: the routers' default
  if (!density.ok()) return density.status();
  request.density = static_cast<float>(*density);
  if (request.prompt.empty()) return absl::InvalidArgumentError("PROMPT encodes to no tokens");

  IncrementalDetokenizer detokenizer(tokenizer);
  auto on_token = [&](size_t, int32_t token) {
    const std::string piece = detokenizer.Push(token);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  };
  absl::StatusOr<std::vector<GenerationResult>> results =
      model->runner->Generate(std::span(&request, 1), tokenizer.eos_ids(), on_token);
  const std::string tail = detokenizer.Flush();
  std::fwrite(tail.data(), 1, tail.size(), stdout);
  std::fputc('\n', stdout);
  return results.status();
}

}  // namespace polar::cli
