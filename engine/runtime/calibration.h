// Polar Sparsity calibration (`polar calibrate`): from a model and
// calibration text to trained head routers, the layers that must stay dense
// and the default density, with a report of what was measured.
//
// 1. Labels: windows of the training part of the text run densely (prefill)
//    with a HeadObserver recording, per layer, each token's router input
//    (the pre-attention normed hidden state) and its heads' true output norms.
// 2. Routers: one linear router per layer (router_training.h); the group
//    score (max or mean of a group's head logits) is the one with the higher
//    held-out group recall, summed over layers and group budgets.
// 3. Importance: each layer alone made sparse (routers, fewest groups) on the
//    validation part; the mean KL divergence from the dense model it causes
//    is the layer's importance.
// 4. Density: for each group level from the lowest, the fewest most important
//    layers kept dense such that validation perplexity rises by at most
//    `quality_target` less a margin; the configuration computing the fewest
//    heads wins.
//    Layer 0 is always dense.
// Training and validation text never overlap (validation is every tenth
// block of the token stream). Deterministic for fixed options.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/model/head_routers.h"
#include "engine/model/router_training.h"
#include "engine/runtime/model_runner.h"

namespace polar {

// ---- The label pass (step 1), shared with MLP calibration (mlp_calibration.h) ----

// What the label pass reads, and the progress callback: the options both
// calibrations start with.
struct LabelPassOptions {
  int32_t label_window = 256;  // tokens per prefill window while recording labels
  int32_t min_position = 16;   // tokens earlier in a window are not samples (too little context)
  int64_t samples_per_layer = 16384;
  // (stage, fraction of the stage done); may be null.
  std::function<void(const std::string& stage, double fraction)> on_progress;
};

// A label window must reach past min_position and fit the runner's step
// budget.
absl::Status CheckLabelWindow(const ModelRunner& runner, const LabelPassOptions& options);

// Runs `tokens` as dense prefill windows of label_window tokens, one window
// a step, for the observer set on the runner to record, until `recorded()`
// reaches samples_per_layer or the windows run out; reports the "labels"
// stage after each window.
absl::Status RunLabelWindows(ModelRunner& runner, std::span<const int32_t> tokens, const LabelPassOptions& options,
                             const std::function<int64_t()>& recorded);

// Sets an observer on a HeadSparsity or MlpSparsity for the guard's
// lifetime: unset however the label pass ends.
template <typename Sparsity, typename Observer>
class ScopedObserver {
 public:
  ScopedObserver(Sparsity& sparsity, Observer* observer) : sparsity_(sparsity) { sparsity_.SetObserver(observer); }
  ~ScopedObserver() { sparsity_.SetObserver(nullptr); }
  ScopedObserver(const ScopedObserver&) = delete;
  ScopedObserver& operator=(const ScopedObserver&) = delete;

 private:
  Sparsity& sparsity_;
};

// ---- Head-sparsity calibration ----

struct CalibrationOptions : LabelPassOptions {
  // Faster than the trainer's defaults on real activations (measured on the
  // default model: higher held-out recall within 20 epochs).
  RouterTrainingOptions training = [] {
    RouterTrainingOptions t;
    t.learning_rate = 3e-3f;
    t.batch_size = 128;
    return t;
  }();
  float validation_fraction = 0.1f;  // tail of the tokens kept for importance and density choice
  float quality_target = 0.02f;      // largest relative perplexity rise the default may cost
  // The search accepts a validation rise of at most target * (1 - margin):
  // room for the difference between the validation text and other text.
  float quality_margin = 0.25f;
  // Validation evaluations (sparsity_eval.h), for importance and density.
  int32_t eval_window = 128;
  int32_t eval_prompt = 32;
  int32_t eval_batch = 8;
  int64_t eval_windows = 24;
  int64_t importance_windows = 4;
};

struct CalibrationResult {
  HeadRouters routers;   // dense layers and default density set
  nlohmann::json report; // per-layer recall and importance, the density search, timings
};

absl::StatusOr<CalibrationResult> Calibrate(ModelRunner& runner, std::span<const int32_t> tokens,
                                            const CalibrationOptions& options);
}  // namespace polar
