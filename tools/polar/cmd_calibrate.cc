// polar calibrate: trains Polar Sparsity's head routers on a model and
// calibration text, finds the layers that must stay dense and the default
// density (engine/runtime/calibration.h), and writes the routers file the
// worker loads with --routers plus a JSON report.
//
//   polar calibrate --model M --corpus FILE [MORE_FILES...] --out routers.safetensors
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/model/text_file.h"
#include "engine/runtime/calibration.h"
#include "tools/polar/commands.h"
#include "tools/polar/loaded_model.h"

namespace polar::cli {

absl::Status RunCalibrate(const std::vector<std::string>& argv) {
  absl::StatusOr<Args> args = Args::Parse(
      argv,
      {"model", "corpus", "out", "report", "samples", "quality-target", "seed", "threads", "kv-cache-bytes",
       "max-batch-tokens", "eval-windows", "importance-windows", "max-epochs", "positive-fraction"},
      {});
  if (!args.ok()) return args.status();
  for (const char* required : {"model", "corpus", "out"}) {
    if (!args->Has(required)) return absl::InvalidArgumentError(absl::StrCat("--", required, " is required"));
  }
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
  std::vector<std::string> corpora = {args->Get("corpus")};
  corpora.insert(corpora.end(), args->positional().begin(), args->positional().end());
  std::vector<int32_t> tokens;
  for (const std::string& path : corpora) {
    absl::StatusOr<std::string> text = ReadTextFile(path);
    if (!text.ok()) return text.status();
    std::vector<int32_t> ids = model->tokenizer->Encode(*text, /*add_special=*/false, /*parse_special=*/false);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  }
  std::fprintf(stderr, "calibrate: %zu tokens from %zu file(s)\n", tokens.size(), corpora.size());
  const absl::Time start = absl::Now();
  options.on_progress = [&start](const std::string& stage, double fraction) {
    std::fprintf(stderr, "\rcalibrate: %-10s %5.1f%%  (%.0f s)", stage.c_str(), 100.0 * fraction,
                 absl::ToDoubleSeconds(absl::Now() - start));
    if (fraction >= 1.0) std::fputc('\n', stderr);
    std::fflush(stderr);
  };
  absl::StatusOr<CalibrationResult> result = Calibrate(*model->runner, tokens, options);
  std::fputc('\n', stderr);
  if (!result.ok()) return result.status();
  if (absl::Status s = result->routers.Save(args->Get("out")); !s.ok()) return s;
  nlohmann::json& report = result->report;
  report["model"] = args->Get("model");
  report["corpus"] = corpora;
  report["seed"] = *seed;
  report["routers"] = args->Get("out");
  const std::string report_path = args->Get("report", args->Get("out") + ".json");
  std::ofstream out(report_path);
  out << report.dump(2) << "\n";
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", report_path));
  const nlohmann::json& chosen = report["chosen"];
  std::printf("routers: %s\nreport: %s\n", args->Get("out").c_str(), report_path.c_str());
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
