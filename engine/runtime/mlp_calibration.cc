// See mlp_calibration.h.
#include "engine/runtime/mlp_calibration.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace polar {
namespace {

// Records each layer's router inputs and fc1 activity (MlpObserver) for
// tokens far enough into their window, up to a cap per layer.
class ActivityRecorder final : public MlpObserver {
 public:
  ActivityRecorder(const ModelConfig& config, int64_t cap, int32_t min_position)
      : cap_(cap), min_position_(min_position), samples_(config.num_layers) {
    for (MlpRouterSamples& s : samples_) {
      s.input_dim = config.hidden_size;
      s.num_neurons = config.intermediate_size;
    }
  }
  void OnLayer(int64_t layer, const StepBatch& step, std::span<const float> router_input,
               std::span<const float> preactivation) override {
    MlpRouterSamples& s = samples_[layer];
    for (int64_t t = 0; t < step.num_tokens() && s.num_samples < cap_; ++t) {
      if (step.positions[t] < min_position_) continue;
      s.inputs.insert(s.inputs.end(), router_input.begin() + t * s.input_dim,
                      router_input.begin() + (t + 1) * s.input_dim);
      for (int64_t n = 0; n < s.num_neurons; ++n) s.active.push_back(preactivation[t * s.num_neurons + n] > 0.0f);
      ++s.num_samples;
    }
  }
  int64_t recorded() const { return samples_.back().num_samples; }
  std::vector<MlpRouterSamples>& samples() { return samples_; }

 private:
  int64_t cap_;
  int32_t min_position_;
  std::vector<MlpRouterSamples> samples_;
};

double Seconds(absl::Time since) { return absl::ToDoubleSeconds(absl::Now() - since); }

}  // namespace

int64_t MlpNeuronStep(int64_t ffn) { return ffn >= 1024 ? 128 : 8; }

absl::StatusOr<std::vector<MlpRouterSamples>> RecordMlpSamples(ModelRunner& runner, std::span<const int32_t> tokens,
                                                              const MlpCalibrationOptions& o) {
  MlpSparsity* mlp = runner.mlp();
  if (mlp == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("MLP sparsity needs a ReLU MLP (OPT); ",
                                                      runner.config().model_type,
                                                      " has a SwiGLU MLP, which has no MLP sparsity"));
  }
  if (absl::Status s = CheckLabelWindow(runner, o); !s.ok()) return s;
  if (o.samples_per_layer < 2) return absl::InvalidArgumentError("samples_per_layer must be >= 2");
  ActivityRecorder recorder(runner.config(), o.samples_per_layer, o.min_position);
  ScopedObserver guard(*mlp, &recorder);
  absl::Status s = RunLabelWindows(runner, tokens, o, [&recorder] { return recorder.recorded(); });
  if (!s.ok()) return s;
  return std::move(recorder.samples());
}

absl::StatusOr<MlpCalibrationResult> CalibrateMlp(ModelRunner& runner, std::span<const int32_t> tokens,
                                                  const MlpCalibrationOptions& o) {
  const absl::Time start = absl::Now();
  if (!(o.target_recall > 0.0 && o.target_recall <= 1.0) || o.recall_batches < 1) {
    return absl::InvalidArgumentError("target recall must be in (0, 1] and recall batches >= 1");
  }
  absl::StatusOr<std::vector<MlpRouterSamples>> recorded = RecordMlpSamples(runner, tokens, o);
  if (!recorded.ok()) return recorded.status();
  std::vector<MlpRouterSamples>& samples = *recorded;
  const int64_t num_samples = samples.back().num_samples;
  if (num_samples < 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("only ", num_samples, " label samples per layer: give more calibration text"));
  }
  const double label_seconds = Seconds(start);

  const ModelConfig& config = runner.config();
  const int64_t ffn = config.intermediate_size;
  const int64_t step = MlpNeuronStep(ffn);
  MlpRouters routers =
      MlpRouters::ZerosFor(config, std::min({o.training.rank, config.hidden_size, config.intermediate_size}));
  routers.bucket_max_batch = o.batch_buckets;
  nlohmann::json layer_reports = nlohmann::json::array();
  const absl::Time train_start = absl::Now();
  int64_t held_out = 0;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    MlpRouterSamples& data = samples[l];
    absl::StatusOr<TrainedMlpRouter> trained = TrainMlpRouter(data, o.training);
    if (!trained.ok()) return trained.status();
    held_out = data.num_samples - trained->validation_begin;
    double active = 0;
    for (uint8_t a : data.active) active += a;
    nlohmann::json layer = {{"layer", l},
                            {"active_fraction", active / static_cast<double>(data.active.size())},
                            {"token_recall", trained->validation_recall},
                            {"best_epoch", trained->best_epoch},
                            {"epochs_run", trained->epochs_run}};
    routers.neurons[l].assign(o.batch_buckets.size(), static_cast<int32_t>(ffn));
    nlohmann::json buckets = nlohmann::json::array();
    for (size_t b = 0; b < o.batch_buckets.size(); ++b) {
      UnionBatches batches;
      batches.batch_size = o.batch_buckets[b];
      batches.num_batches = o.recall_batches;
      batches.seed = o.seed + 1000003 * b;
      batches.begin = trained->validation_begin;
      batches.end = data.num_samples;
      absl::StatusOr<std::vector<double>> curve = UnionRecallByK(data, *trained, batches);
      if (!curve.ok()) return curve.status();
      // Greedy: the first multiple of the step (capped at ffn) that meets the target.
      int64_t k = step;
      while (k < ffn && (*curve)[k] < o.target_recall) k += step;
      k = std::min(k, ffn);
      routers.neurons[l][b] = static_cast<int32_t>(k);
      buckets.push_back({{"max_batch", o.batch_buckets[b]},
                         {"batch_drawn", std::min<int64_t>(o.batch_buckets[b], data.num_samples - batches.begin)},
                         {"k", k},
                         {"union_recall", (*curve)[k]},
                         {"dense", static_cast<double>(k) > 0.8 * static_cast<double>(ffn)}});
    }
    layer["buckets"] = buckets;
    layer_reports.push_back(layer);
    routers.down[l] = std::move(trained->down);
    routers.up[l] = std::move(trained->up);
    routers.bias[l] = std::move(trained->bias);
    data = MlpRouterSamples();  // frees the layer's samples
    if (o.on_progress) o.on_progress("training", static_cast<double>(l + 1) / static_cast<double>(config.num_layers));
  }
  if (MlpSparsity* mlp = runner.mlp(); mlp != nullptr) {
    if (absl::Status s = mlp->SetRouters(routers); !s.ok()) return s;
  }
  nlohmann::json report;
  report["samples_per_layer"] = num_samples;
  report["held_out_samples"] = held_out;
  report["rank"] = routers.rank;
  report["ffn"] = ffn;
  report["neuron_step"] = step;
  report["target_recall"] = o.target_recall;
  report["batch_buckets"] = o.batch_buckets;
  report["layers"] = layer_reports;
  report["seconds"] = {{"labels", label_seconds}, {"training_and_k", Seconds(train_start)}, {"total", Seconds(start)}};
  return MlpCalibrationResult{std::move(routers), std::move(report)};
}

}  // namespace polar
