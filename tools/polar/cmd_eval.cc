// polar eval: what Polar Sparsity costs in quality on a corpus
// (engine/runtime/sparsity_eval.h): perplexity, top-1 agreement and mean KL
// against the dense model, and the density achieved per layer. A table, or
// one JSON object with --json.
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "engine/model/text_file.h"
#include "engine/runtime/sparsity_eval.h"
#include "tools/polar/commands.h"
#include "tools/polar/loaded_model.h"

namespace polar::cli {
namespace {

absl::StatusOr<HeadSelectionMode> ParseSelection(const std::string& name) {
  if (name == "routers") return HeadSelectionMode::kRouters;
  if (name == "oracle") return HeadSelectionMode::kOracle;
  if (name == "random") return HeadSelectionMode::kRandom;
  return absl::InvalidArgumentError(absl::StrCat("--selection \"", name, "\": expected routers, oracle or random"));
}

}  // namespace

absl::Status RunEval(const std::vector<std::string>& argv) {
  absl::StatusOr<Args> args =
      Args::Parse(argv,
                  {"model", "routers", "density", "selection", "unit", "corpus", "window", "prompt", "batch",
                   "max-windows", "seed", "threads", "kv-cache-bytes", "max-batch-tokens"},
                  {"json", "route-all-layers"});
  if (!args.ok()) return args.status();
  if (!args->Has("corpus")) return absl::InvalidArgumentError("--corpus FILE is required");
  absl::StatusOr<HeadSelectionMode> mode = ParseSelection(args->Get("selection", "routers"));
  if (!mode.ok()) return mode.status();
  const std::string unit = args->Get("unit", "group");
  if (unit != "group" && unit != "head") return absl::InvalidArgumentError("--unit: expected group or head");
  SparsityEvalOptions options;
  options.mode = *mode;
  options.unit = unit == "head" ? SelectionUnit::kQueryHead : SelectionUnit::kKvGroup;
  absl::StatusOr<int64_t> window = args->GetInt("window", 256);
  absl::StatusOr<int64_t> prompt = args->GetInt("prompt", 32);
  absl::StatusOr<int64_t> batch = args->GetInt("batch", 16);
  absl::StatusOr<int64_t> max_windows = args->GetInt("max-windows", 0);
  absl::StatusOr<int64_t> seed = args->GetInt("seed", 1);
  for (absl::Status s : {window.status(), prompt.status(), batch.status(), max_windows.status(), seed.status()}) {
    if (!s.ok()) return s;
  }
  options.window = static_cast<int32_t>(*window);
  options.prompt = static_cast<int32_t>(*prompt);
  options.batch = static_cast<int32_t>(*batch);
  options.max_windows = *max_windows;
  options.seed = static_cast<uint64_t>(*seed);

  absl::StatusOr<LoadedModel> model = LoadModel(*args, /*with_tokenizer=*/true);
  if (!model.ok()) return model.status();
  ModelRunner& runner = *model->runner;
  if (args->Has("route-all-layers")) {
    // Route every layer that has a trained router, including the ones
    // calibration kept dense: the routers' own accuracy, layer for layer
    // comparable with the oracle and random selections (layer 0 stays dense).
    const HeadRouters* loaded = runner.heads().routers();
    if (loaded == nullptr) return absl::InvalidArgumentError("--route-all-layers needs --routers");
    HeadRouters all = *loaded;
    for (int64_t l = 0; l < all.num_layers; ++l) all.dense[l] = l == 0 || all.weight[l].empty();
    if (absl::Status s = runner.heads().SetRouters(all); !s.ok()) return s;
  }
  const std::string density = args->Get("density", "default");
  if (density == "oracle") {
    // The oracle at the calibrated density: the upper bound for these routers.
    if (runner.heads().routers() == nullptr) {
      return absl::InvalidArgumentError("--density oracle means the oracle at the routers' default density: give "
                                        "--routers, or --selection oracle --density D");
    }
    options.mode = HeadSelectionMode::kOracle;
    options.density = runner.default_density();
  } else if (density == "default") {
    options.density = runner.default_density();
  } else if (density == "dense") {
    options.density = 1.0f;
  } else {
    absl::StatusOr<double> value = args->GetDouble("density", 1.0);
    if (!value.ok()) return absl::InvalidArgumentError("--density: a number in (0, 1], default or dense");
    options.density = static_cast<float>(*value);
  }
  absl::StatusOr<std::string> text = ReadTextFile(args->Get("corpus"));
  if (!text.ok()) return text.status();
  const std::vector<int32_t> tokens = model->tokenizer->Encode(*text, /*add_special=*/false, /*parse_special=*/false);
  const bool json = args->Has("json");
  options.on_progress = [](int64_t done, int64_t total) {
    std::fprintf(stderr, "\reval: %lld/%lld windows", static_cast<long long>(done), static_cast<long long>(total));
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  };
  absl::StatusOr<SparsityEvalResult> r = EvaluateSparsity(runner, tokens, options);
  if (!r.ok()) return r.status();

  const char* selection = options.mode == HeadSelectionMode::kRouters  ? "routers"
                          : options.mode == HeadSelectionMode::kOracle ? "oracle"
                                                                       : "random";
  if (json) {
    nlohmann::json out = {{"model", args->Get("model")},
                          {"routers", args->Get("routers")},
                          {"route_all_layers", args->Has("route-all-layers")},
                          {"corpus", args->Get("corpus")},
                          {"selection", selection},
                          {"unit", unit},
                          {"requested_density", options.density},
                          {"window", options.window},
                          {"prompt", options.prompt},
                          {"windows", r->windows},
                          {"scored_tokens", r->scored_tokens},
                          {"perplexity", r->perplexity},
                          {"dense_perplexity", r->dense_perplexity},
                          {"top1_agreement", r->top1_agreement},
                          {"mean_kl", r->mean_kl},
                          {"density", r->density},
                          {"layer_density", r->layer_density}};
    std::printf("%s\n", out.dump().c_str());
    return absl::OkStatus();
  }
  std::printf("selection %s, unit %s, requested density %.4f, %lld windows x %d tokens (%d prompt), %lld scored\n",
              selection, unit.c_str(), options.density, static_cast<long long>(r->windows), options.window,
              options.prompt, static_cast<long long>(r->scored_tokens));
  std::printf("%-22s %12s\n", "perplexity", absl::StrCat(r->perplexity).c_str());
  std::printf("%-22s %12s\n", "dense perplexity", absl::StrCat(r->dense_perplexity).c_str());
  std::printf("%-22s %12.4f\n", "top-1 agreement", r->top1_agreement);
  std::printf("%-22s %12.6f\n", "mean KL (nats)", r->mean_kl);
  std::printf("%-22s %12.4f\n", "achieved density", r->density);
  std::printf("per-layer density:");
  for (size_t l = 0; l < r->layer_density.size(); ++l) std::printf(" %zu:%.3f", l, r->layer_density[l]);
  std::printf("\n");
  return absl::OkStatus();
}

}  // namespace polar::cli
