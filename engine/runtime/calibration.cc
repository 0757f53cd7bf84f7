// See calibration.h.
#include "engine/runtime/calibration.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/runtime/kv_cache.h"
#include "engine/runtime/sparsity_eval.h"

namespace polar {
namespace {

// Records each layer's router inputs and head-output norms (HeadObserver)
// for tokens far enough into their window, up to a cap per layer.
class LabelRecorder final : public HeadObserver {
 public:
  LabelRecorder(const ModelConfig& config, int64_t cap, int32_t min_position)
      : cap_(cap), min_position_(min_position), samples_(config.num_layers) {
    for (RouterSamples& s : samples_) {
      s.input_dim = config.hidden_size;
      s.num_heads = config.num_heads;
      s.num_groups = config.num_kv_heads;
    }
  }
  void OnLayer(int64_t layer, const StepBatch& step, std::span<const float> router_input,
               std::span<const float> head_norms) override {
    RouterSamples& s = samples_[layer];
    for (int64_t t = 0; t < step.num_tokens() && s.num_samples < cap_; ++t) {
      if (step.positions[t] < min_position_) continue;
      s.inputs.insert(s.inputs.end(), router_input.begin() + t * s.input_dim,
                      router_input.begin() + (t + 1) * s.input_dim);
      s.head_norms.insert(s.head_norms.end(), head_norms.begin() + t * s.num_heads,
                          head_norms.begin() + (t + 1) * s.num_heads);
      ++s.num_samples;
    }
  }
  int64_t recorded() const { return samples_.back().num_samples; }
  std::vector<RouterSamples>& samples() { return samples_; }

 private:
  int64_t cap_;
  int32_t min_position_;
  std::vector<RouterSamples> samples_;
};

double Seconds(absl::Time since) { return absl::ToDoubleSeconds(absl::Now() - since); }

}  // namespace

absl::Status CheckLabelWindow(const ModelRunner& runner, const LabelPassOptions& o) {
  if (o.label_window < o.min_position + 1 || o.label_window > runner.options().max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("label window ", o.label_window, " must exceed min_position ",
                                                   o.min_position, " and fit the step budget ",
                                                   runner.options().max_batch_tokens));
  }
  return absl::OkStatus();
}

absl::Status RunLabelWindows(ModelRunner& runner, std::span<const int32_t> tokens, const LabelPassOptions& o,
                             const std::function<int64_t()>& recorded) {
  std::vector<float> logits;
  const int64_t windows = static_cast<int64_t>(tokens.size()) / o.label_window;
  for (int64_t w = 0; w < windows && recorded() < o.samples_per_layer; ++w) {
    SequenceKv kv(runner.kv_layout().block_size);
    runner.ClearStep();
    absl::Status s = runner.AddToStep(kv, tokens.subspan(w * o.label_window, o.label_window), false, 1.0f);
    if (s.ok()) s = runner.RunStep(logits);
    kv.Release(runner.kv_allocator());
    if (!s.ok()) return s;
    if (o.on_progress) {
      o.on_progress("labels", static_cast<double>(recorded()) / static_cast<double>(o.samples_per_layer));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CalibrationResult> Calibrate(ModelRunner& runner, std::span<const int32_t> tokens,
                                            const CalibrationOptions& o) {
  const absl::Time start = absl::Now();
  const ModelConfig& config = runner.config();
  const int64_t layers = config.num_layers;
  const int64_t groups = config.num_kv_heads;
  if (groups < 2) {
    return absl::FailedPreconditionError(
        "the model has a single KV group: selecting groups cannot skip anything (head sparsity needs >= 2)");
  }
  if (layers < 2) return absl::FailedPreconditionError("the model has one layer, and layer 0 stays dense");
  if (absl::Status s = CheckLabelWindow(runner, o); !s.ok()) return s;
  if (!(o.validation_fraction > 0.0f && o.validation_fraction < 0.5f)) {
    return absl::InvalidArgumentError("validation fraction must be in (0, 0.5)");
  }
  // Validation takes every k-th block of eval_window tokens through the whole
  // text (k = 1 / validation_fraction), so it has the text's mix of sources
  // (a tail would be one source only); training gets the other blocks. No
  // token is in both.
  std::vector<int32_t> train_tokens, validation_tokens;
  {
    const int64_t every = std::max<int64_t>(2, std::llround(1.0 / o.validation_fraction));
    const int64_t blocks = static_cast<int64_t>(tokens.size()) / o.eval_window;
    for (int64_t b = 0; b < blocks; ++b) {
      const auto block = tokens.subspan(b * o.eval_window, o.eval_window);
      std::vector<int32_t>& to = b % every == every - 1 ? validation_tokens : train_tokens;
      to.insert(to.end(), block.begin(), block.end());
    }
  }
  const std::span<const int32_t> train = train_tokens;
  const std::span<const int32_t> validation = validation_tokens;
  const int64_t needed_eval = std::max(o.eval_windows, o.importance_windows) * o.eval_window;
  if (static_cast<int64_t>(validation.size()) < needed_eval) {
    return absl::InvalidArgumentError(absl::StrCat("the validation part has ", validation.size(),
                                                   " tokens; the evaluations need ", needed_eval,
                                                   ": give more calibration text"));
  }
  auto progress = [&](const std::string& stage, double fraction) {
    if (o.on_progress) o.on_progress(stage, fraction);
  };
  nlohmann::json report;
  report["tokens"] = {{"train", train.size()}, {"validation", validation.size()}};

  // 1. Labels.
  absl::Time stage_start = absl::Now();
  LabelRecorder recorder(config, o.samples_per_layer, o.min_position);
  {
    ScopedObserver guard(runner.heads(), &recorder);
    absl::Status s = RunLabelWindows(runner, train, o, [&recorder] { return recorder.recorded(); });
    if (!s.ok()) return s;
  }
  const int64_t samples = recorder.recorded();
  if (samples < 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("only ", samples, " label samples per layer: give more calibration text"));
  }
  report["samples_per_layer"] = samples;
  const double label_seconds = Seconds(stage_start);

  // 2. Routers, and which group score ranks groups best on held-out samples.
  stage_start = absl::Now();
  HeadRouters routers = HeadRouters::DenseFor(config);
  nlohmann::json layer_reports = nlohmann::json::array();
  double recall_sum[2] = {0, 0};  // by GroupScore
  layer_reports.push_back({{"layer", 0}, {"routed", false}});
  for (int64_t l = 1; l < layers; ++l) {
    RouterSamples& data = recorder.samples()[l];
    absl::StatusOr<TrainedRouter> trained = TrainHeadRouter(data, o.training);
    if (!trained.ok()) return trained.status();
    nlohmann::json layer = {{"layer", l},
                            {"routed", true},
                            {"head_recall", trained->validation_recall},
                            {"best_epoch", trained->best_epoch},
                            {"epochs_run", trained->epochs_run}};
    for (GroupScore reduce : {GroupScore::kMax, GroupScore::kMean}) {
      nlohmann::json by_budget = nlohmann::json::array();
      for (int32_t k = 1; k < groups; ++k) {
        absl::StatusOr<double> recall = GroupRecall(data, trained->weight, trained->bias, k, reduce,
                                                    trained->validation_begin, data.num_samples);
        if (!recall.ok()) return recall.status();
        recall_sum[static_cast<int>(reduce)] += *recall;
        by_budget.push_back(*recall);
      }
      layer[absl::StrCat("group_recall_", GroupScoreName(reduce))] = by_budget;
    }
    layer_reports.push_back(layer);
    routers.dense[l] = false;
    routers.weight[l] = std::move(trained->weight);
    routers.bias[l] = std::move(trained->bias);
    data = RouterSamples();  // frees the layer's samples
    progress("training", static_cast<double>(l) / static_cast<double>(layers - 1));
  }
  routers.group_score = recall_sum[static_cast<int>(GroupScore::kMean)] > recall_sum[static_cast<int>(GroupScore::kMax)]
                            ? GroupScore::kMean
                            : GroupScore::kMax;
  report["group_score"] = GroupScoreName(routers.group_score);
  report["group_recall_sum"] = {{"max", recall_sum[0]}, {"mean", recall_sum[1]}};
  const double training_seconds = Seconds(stage_start);

  // Validation perplexity with `dense_layers` dense and the rest routed at `density`.
  SparsityEvalOptions eval;
  eval.window = o.eval_window;
  eval.prompt = o.eval_prompt;
  eval.batch = o.eval_batch;
  eval.mode = HeadSelectionMode::kRouters;
  auto validate = [&](const std::vector<bool>& dense_layers, float density,
                      int64_t windows) -> absl::StatusOr<SparsityEvalResult> {
    HeadRouters trial = routers;
    trial.dense = dense_layers;
    if (absl::Status s = runner.heads().SetRouters(trial); !s.ok()) return s;
    eval.density = density;
    eval.max_windows = windows;
    return EvaluateSparsity(runner, validation, eval);
  };

  // 3. Importance: each layer alone sparse, at the fewest groups.
  stage_start = absl::Now();
  const float lowest = 1.0f / static_cast<float>(groups);
  std::vector<double> importance(layers, 0.0);
  for (int64_t l = 1; l < layers; ++l) {
    std::vector<bool> dense(layers, true);
    dense[l] = false;
    absl::StatusOr<SparsityEvalResult> r = validate(dense, lowest, o.importance_windows);
    if (!r.ok()) return r.status();
    // KL(dense || sparse) on the same tokens: a paired measure, far less
    // noisy on a few windows than the perplexity rise (also reported).
    importance[l] = r->mean_kl;
    layer_reports[l]["importance_kl"] = r->mean_kl;
    layer_reports[l]["importance_perplexity_rise"] = r->perplexity / r->dense_perplexity - 1.0;
    progress("importance", static_cast<double>(l) / static_cast<double>(layers - 1));
  }
  report["layers"] = layer_reports;
  std::vector<int64_t> by_importance(layers - 1);
  std::iota(by_importance.begin(), by_importance.end(), 1);
  std::stable_sort(by_importance.begin(), by_importance.end(),
                   [&](int64_t a, int64_t b) { return importance[a] > importance[b]; });
  const double importance_seconds = Seconds(stage_start);

  // 4. Density: per group level, the fewest critical layers meeting the target.
  stage_start = absl::Now();
  auto dense_set = [&](int64_t critical) {
    std::vector<bool> dense(layers, false);
    dense[0] = true;
    for (int64_t i = 0; i < critical; ++i) dense[by_importance[i]] = true;
    return dense;
  };
  nlohmann::json search = nlohmann::json::array();
  double dense_perplexity = 0;
  struct Choice {
    int64_t groups_kept;
    int64_t critical;
    double effective;  // heads computed / heads in total, over all layers
    double perplexity;
  };
  std::optional<Choice> best;
  const int64_t routable = layers - 1;
  for (int64_t k = 1; k < groups; ++k) {
    const float density = static_cast<float>(k) / static_cast<float>(groups);
    // Binary search on the number of critical layers (more dense layers,
    // lower perplexity); c = routable (all dense) always meets the target.
    int64_t lo = 0, hi = routable;
    std::optional<double> at_hi;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      absl::StatusOr<SparsityEvalResult> r = validate(dense_set(mid), density, o.eval_windows);
      if (!r.ok()) return r.status();
      dense_perplexity = r->dense_perplexity;
      const double rise = r->perplexity / r->dense_perplexity - 1.0;
      search.push_back({{"groups_kept", k}, {"density", density}, {"critical_layers", mid},
                        {"perplexity", r->perplexity}, {"rise", rise}});
      if (rise <= o.quality_target * (1.0f - o.quality_margin)) {
        hi = mid;
        at_hi = r->perplexity;
      } else {
        lo = mid + 1;
      }
      progress("density", static_cast<double>(k - 1) / static_cast<double>(groups - 1));
    }
    if (lo >= routable) continue;  // only all-dense meets it at this level
    if (!at_hi.has_value()) {  // hi never tested at this value: measure it
      absl::StatusOr<SparsityEvalResult> r = validate(dense_set(lo), density, o.eval_windows);
      if (!r.ok()) return r.status();
      at_hi = r->perplexity;
    }
    const double effective =
        (1.0 + static_cast<double>(lo) + static_cast<double>(routable - lo) * density) / static_cast<double>(layers);
    if (!best.has_value() || effective < best->effective) best = Choice{k, lo, effective, *at_hi};
  }
  report["search"] = search;
  report["dense_perplexity"] = dense_perplexity;
  report["quality_target"] = o.quality_target;
  report["quality_margin"] = o.quality_margin;
  const double search_seconds = Seconds(stage_start);

  nlohmann::json chosen;
  if (best.has_value()) {
    routers.dense = dense_set(best->critical);
    routers.default_density = static_cast<float>(best->groups_kept) / static_cast<float>(groups);
    chosen = {{"default_density", routers.default_density},
              {"groups_kept", best->groups_kept},
              {"critical_layers", best->critical},
              {"effective_density", best->effective},
              {"validation_perplexity", best->perplexity},
              {"rise", best->perplexity / dense_perplexity - 1.0}};
  } else {
    // Nothing sparse met the target: serve dense by default; explicit
    // densities still route every layer but 0.
    routers.dense = dense_set(0);
    routers.default_density = 1.0f;
    chosen = {{"default_density", 1.0}, {"note", "no sparse configuration met the quality target"}};
  }
  nlohmann::json dense_layers = nlohmann::json::array();
  for (int64_t l = 0; l < layers; ++l) {
    if (routers.dense[l]) dense_layers.push_back(l);
  }
  chosen["dense_layers"] = dense_layers;
  report["chosen"] = chosen;
  if (absl::Status s = runner.heads().SetRouters(routers); !s.ok()) return s;
  report["seconds"] = {{"labels", label_seconds},
                       {"training", training_seconds},
                       {"importance", importance_seconds},
                       {"density_search", search_seconds},
                       {"total", Seconds(start)}};
  return CalibrationResult{std::move(routers), std::move(report)};
}

}  // namespace polar
