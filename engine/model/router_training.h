// Training of one layer's head router (Polar Sparsity), the step of `polar
// calibrate` that turns recorded activations into the linear scorer
// head_routers.h serves: logits = W · x + b on the layer's pre-attention
// normed hidden state x, one logit per query head.
//
// Labels: per sample, the top ceil(positive_fraction * num_heads) heads by
// their true attention-output norm are 1, the rest 0. Loss: binary
// cross-entropy on sigmoid(logits), positives weighted 1 and negatives by the
// fraction of positives (the paper's weighting), minimised with AdamW over
// seeded minibatches. The validation samples are held out; after each epoch
// their head recall decides which epoch's weights are kept and when to stop.
//
// Everything is deterministic: the same samples and options give the same
// weights bit for bit, whatever the OpenMP thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"

namespace polar {

// Training data of one layer's router, collected by calibration: the
// router's input per token and the true per-head attention-output norms
// (labels derive from them). Keep the samples in collection order: the
// validation split is their tail (see TrainedRouter::validation_begin).
struct RouterSamples {
  int64_t num_samples = 0;
  int64_t input_dim = 0;
  int64_t num_heads = 0;
  int64_t num_groups = 0;         // KV groups; divides num_heads
  std::vector<float> inputs;      // [num_samples, input_dim]
  std::vector<float> head_norms;  // [num_samples, num_heads]
};

struct RouterTrainingOptions {
  float positive_fraction = 0.5f;  // per sample the top ceil(f * num_heads) heads by norm are labelled 1
  int32_t max_epochs = 20;
  int32_t batch_size = 256;
  float learning_rate = 1e-3f;
  float weight_decay = 0.01f;        // AdamW (decoupled), on W only
  float validation_fraction = 0.1f;  // held out from training, for recall and early stopping
  int32_t patience = 4;              // epochs without validation improvement before stopping
  float stop_recall = 0.99f;         // stop once validation recall reaches it
  uint64_t seed = 1;                 // minibatch order
  // Progress after each epoch (1-based): mean training loss, validation head
  // recall. May be null.
  std::function<void(int epoch, double loss, double recall)> on_epoch;
};

struct TrainedRouter {
  std::vector<float> weight;  // [num_heads, input_dim], applied to the raw input
  std::vector<float> bias;    // [num_heads]
  // Head recall on the validation samples of the kept epoch (the best one):
  // per sample, the fraction of its positive heads among the router's top
  // |positives| heads, averaged.
  double validation_recall = 0;
  int32_t epochs_run = 0;
  int32_t best_epoch = 0;  // 1-based
  // Samples [validation_begin, num_samples) were held out: pass that range to
  // GroupRecall for held-out numbers.
  int64_t validation_begin = 0;
};

absl::StatusOr<TrainedRouter> TrainHeadRouter(const RouterSamples& samples, const RouterTrainingOptions& options);

// Recall of a router on samples [begin, end) at a group budget: per sample,
// with k = groups_kept, the fraction of the true top-k groups (true group
// score = sum of its heads' norms) that the router's top-k groups contain
// (router group score = max or mean of its heads' logits, per `reduce`,
// ranked exactly as serving ranks them: ties to the lower group id);
// averaged over the samples. Calibration uses it to choose max vs mean and to
// report recall per layer. weight: [num_heads, input_dim]; bias: [num_heads].
absl::StatusOr<double> GroupRecall(const RouterSamples& samples, const std::vector<float>& weight,
                                   const std::vector<float>& bias, int32_t groups_kept, GroupScore reduce,
                                   int64_t begin, int64_t end);

}  // namespace polar
