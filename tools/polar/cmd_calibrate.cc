// polar calibrate: trains Polar Sparsity's head routers on a model and
// calibration text, finds the layers that must stay dense and the default
// density (engine/runtime/calibration.h), and writes the routers file the
// worker loads with --routers plus a JSON report.
//
//   polar calibrate --model M --corpus FILE [MORE_FILES...] --out routers.safetensors
//
// With --mlp (ReLU models: OPT) it calibrates MLP sparsity instead
// (engine/runtime/mlp_calibration.h): low-rank MLP routers and k per layer
// and batch bucket, written to --out for the worker's --mlp-routers.
//
//   polar calibrate --mlp --model M --corpus FILE... --out mlp_routers.safetensors
//                   [--mlp-rank R] [--target-recall F] [--samples N] [--max-epochs N] [--seed S]
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/model/text_file.h"
#include "engine/runtime/calibration.h"
#include "engine/runtime/mlp_calibration.h"
#include "tools/polar/commands.h"
#include "tools/polar/loaded_model.h"

namespace polar::cli {
namespace {

// The text of --corpus and the positional files, tokenized and concatenated
// in that order; `corpora` gets their paths (for the report).
absl::StatusOr<std::vector<int32_t>> ReadCorpora(const Args& args, const Tokenizer& tokenizer,
                                                 std::vector<std::string>& corpora) {
  corpora = {args.Get("corpus")};
  corpora.insert(corpora.end(), args.positional().begin(), args.positional().end());
  std::vector<int32_t> tokens;
  for (const std::string& path : corpora) {
    absl::StatusOr<std::string> text = ReadTextFile(path);
    if (!text.ok()) return text.status();
    std::vector<int32_t> ids = tokenizer.Encode(*text, /*add_special=*/false, /*parse_special=*/false);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  }
  return tokens;
}

// Writes the JSON report to --report (default: the routers file + ".json")
// and returns its path.
absl::StatusOr<std::string> WriteReport(const Args& args, const std::string& out_path, const nlohmann::json& report) {
  const std::string report_path = args.Get("report", out_path + ".json");
  std::ofstream out(report_path);
  out << report.dump(2) << "\n";
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", report_path));
  return report_path;
}

// ---- --mlp: MLP sparsity (a block of its own; the head calibration below
// does not run) ----

absl::Status RunCalibrateMlp(const Args& args) {
  MlpCalibrationOptions options;
  absl::StatusOr<int64_t> samples = args.GetInt("samples", options.samples_per_layer);
  absl::StatusOr<int64_t> seed = args.GetInt("seed", 1);
  absl::StatusOr<int64_t> epochs = args.GetInt("max-epochs", options.training.max_epochs);
  absl::StatusOr<int64_t> rank = args.GetInt("mlp-rank", options.training.rank);
  absl::StatusOr<double> target = args.GetDouble("target-recall", options.target_recall);
  for (absl::Status s : {samples.status(), seed.status(), epochs.status(), rank.status(), target.status()}) {
    if (!s.ok()) return s;
  }
  if (*samples < 1000 || *epochs < 1 || *rank < 1 || !(*target > 0 && *target <= 1)) {
    return absl::InvalidArgumentError("--samples >= 1000, --max-epochs and --mlp-rank >= 1, --target-recall in (0, 1]");
  }
  options.samples_per_layer = *samples;
  options.training.max_epochs = static_cast<int32_t>(*epochs);
  options.training.rank = *rank;
  options.training.seed = static_cast<uint64_t>(*seed);
  options.seed = static_cast<uint64_t>(*seed);
  options.target_recall = *target;

  absl::StatusOr<LoadedModel> model = LoadModel(args, /*with_tokenizer=*/true);
  if (!model.ok()) return model.status();
  const ModelConfig& config = model->runner->config();
  if (config.family != ArchFamily::kOpt) {
    return absl::FailedPreconditionError(absl::StrCat("--mlp needs a ReLU MLP (OPT); ", config.model_type,
                                                      " has a SwiGLU MLP, which has no MLP sparsity"));
  }
  std::vector<std::string> corpora;
  absl::StatusOr<std::vector<int32_t>> tokens = ReadCorpora(args, *model->tokenizer, corpora);
  if (!tokens.ok()) return tokens.status();
  std::fprintf(stderr, "calibrate --mlp: %zu tokens from %zu file(s)\n", tokens->size(), corpora.size());
  const absl::Time start = absl::Now();
  options.on_progress = [&start](const std::string& stage, double fraction) {
    std::fprintf(stderr, "\rcalibrate --mlp: %-10s %5.1f%%  (%.0f s)", stage.c_str(), 100.0 * fraction,
                 absl::ToDoubleSeconds(absl::Now() - start));
    std::fflush(stderr);
  };
  absl::StatusOr<MlpCalibrationResult> result = CalibrateMlp(*model->runner, *tokens, options);
  std::fputc('\n', stderr);
  if (!result.ok()) return result.status();
  const std::string out_path = args.Get("out");
  if (absl::Status s = result->routers.Save(out_path); !s.ok()) return s;
  nlohmann::json& report = result->report;
  report["model"] = args.Get("model");
  report["corpus"] = corpora;
  report["seed"] = *seed;
  report["mlp_routers"] = out_path;
  absl::StatusOr<std::string> report_path = WriteReport(args, out_path, report);
  if (!report_path.ok()) return report_path.status();
  std::printf("mlp routers: %s (rank %lld)\nreport: %s\n", out_path.c_str(),
              static_cast<long long>(result->routers.rank), report_path->c_str());
  std::printf("neurons kept of %lld per layer, by batch size up to", static_cast<long long>(config.intermediate_size));
  for (int32_t b : result->routers.bucket_max_batch) std::printf(" %d", b);
  std::printf(":\n");
  for (const nlohmann::json& layer : report["layers"]) {
    std::printf("  layer %3lld (token recall %.3f):", static_cast<long long>(layer["layer"].get<int64_t>()),
                layer["token_recall"].get<double>());
    for (const nlohmann::json& b : layer["buckets"]) std::printf(" %lld", static_cast<long long>(b["k"].get<int64_t>()));
    std::printf("\n");
  }
  std::printf("time: %.1f s\n", report["seconds"]["total"].get<double>());
  return absl::OkStatus();
}

}  // namespace

absl::Status RunCalibrate(const std::vector<std::string>& argv) {
  absl::StatusOr<Args> args = Args::Parse(
      argv,
      {"model", "corpus", "out", "report", "samples", "quality-target", "seed", "threads", "kv-cache-bytes",
       "max-batch-tokens", "eval-windows", "importance-windows", "max-epochs", "positive-fraction", "mlp-rank",
       "target-recall"},
      {"mlp"});
  if (!args.ok()) return args.status();
  for (const char* required : {"model", "corpus", "out"}) {
    if (!args->Has(required)) return absl::InvalidArgumentError(absl::StrCat("--", required, " is required"));
  }
  if (args->Has("mlp")) return RunCalibrateMlp(*args);
  CalibrationOptions options;
  absl::StatusOr<int64_t> samples = args->GetInt("samples", options.samples_per_layer);
  absl::StatusOr<double> target = args->GetDouble("quality-target", options.quality_target);
  absl::StatusOr<int64_t> seed = args->GetInt("seed", 1);
  absl::StatusOr<int64_t> eval_windows = args->GetInt("eval-windows", options.eval_windows);
  absl::StatusOr<int64_t> importance_windows = args->GetInt("importance-windows", options.importance_windows);
  absl::StatusOr<int64_t> epochs = args->GetInt("max-epochs", options.training.max_epochs);
  absl::StatusOr<double> positive = args->GetDouble("positive-fraction", options.training.positive_fraction);
  for (absl::Status s : {samples.status(), target.status(), seed.status(), eval_windows.status(),
                         importance_windows.status(), epochs.status(), positive.status()}) {
    if (!s.ok()) return s;
  }
  if (*samples < 1000 || *target <= 0 || *eval_windows < 1 || *importance_windows < 1 || *epochs < 1 ||
      !(*positive > 0 && *positive < 1)) {
    return absl::InvalidArgumentError(
        "--samples >= 1000, --quality-target > 0, windows and --max-epochs >= 1, --positive-fraction in (0, 1)");
  }
  options.samples_per_layer = *samples;
  options.quality_target = static_cast<float>(*target);
  options.training.seed = static_cast<uint64_t>(*seed);
  options.training.max_epochs = static_cast<int32_t>(*epochs);
  options.training.positive_fraction = static_cast<float>(*positive);
  options.eval_windows = *eval_windows;
  options.importance_windows = *importance_windows;

  absl::StatusOr<LoadedModel> model = LoadModel(*args, /*with_tokenizer=*/true);
  if (!model.ok()) return model.status();
  std::vector<std::string> corpora;
  absl::StatusOr<std::vector<int32_t>> tokens = ReadCorpora(*args, *model->tokenizer, corpora);
  if (!tokens.ok()) return tokens.status();
  std::fprintf(stderr, "calibrate: %zu tokens from %zu file(s)\n", tokens->size(), corpora.size());
  const absl::Time start = absl::Now();
  options.on_progress = [&start](const std::string& stage, double fraction) {
    std::fprintf(stderr, "\rcalibrate: %-10s %5.1f%%  (%.0f s)", stage.c_str(), 100.0 * fraction,
                 absl::ToDoubleSeconds(absl::Now() - start));
    if (fraction >= 1.0) std::fputc('\n', stderr);
    std::fflush(stderr);
  };
  absl::StatusOr<CalibrationResult> result = Calibrate(*model->runner, *tokens, options);
  std::fputc('\n', stderr);
  if (!result.ok()) return result.status();
  if (absl::Status s = result->routers.Save(args->Get("out")); !s.ok()) return s;
  nlohmann::json& report = result->report;
  report["model"] = args->Get("model");
  report["corpus"] = corpora;
  report["seed"] = *seed;
  report["routers"] = args->Get("out");
  absl::StatusOr<std::string> report_path = WriteReport(*args, args->Get("out"), report);
  if (!report_path.ok()) return report_path.status();
  const nlohmann::json& chosen = report["chosen"];
  std::printf("routers: %s\nreport: %s\n", args->Get("out").c_str(), report_path->c_str());
  std::printf("group score: %s\ndefault density: %s\ndense layers: %s\n",
              report["group_score"].get<std::string>().c_str(), chosen["default_density"].dump().c_str(),
              chosen["dense_layers"].dump().c_str());
  if (chosen.contains("rise")) {
    std::printf("validation perplexity: %.4f (dense %.4f, %+.2f%%; target %+.2f%%)\n",
                chosen["validation_perplexity"].get<double>(), report["dense_perplexity"].get<double>(),
                100.0 * chosen["rise"].get<double>(), 100.0 * options.quality_target);
  }
  std::printf("time: %.1f s\n", report["seconds"]["total"].get<double>());
  return absl::OkStatus();
}

}  // namespace polar::cli
