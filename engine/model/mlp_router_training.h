// Training of one layer's MLP router (Polar Sparsity, ReLU models), the step
// of `polar calibrate --mlp` that turns recorded activations into the
// low-rank scorer mlp_sparsity.h serves: scores = up · (down · x) + bias on
// the layer's pre-attention normed hidden state x, one score per fc1 neuron.
//
// Labels: 1 where the neuron's fc1 pre-activation is > 0 (its ReLU output is
// non-zero), else 0. Loss: binary cross-entropy on sigmoid(scores),
// positives weighted 1 and negatives by the fraction of positives + 0.005
// (the paper's weighting: active neurons are the minority, and missing one
// costs more than computing an idle one), minimised with AdamW over seeded
// minibatches. The tail of the samples is held out; after each epoch its
// recall decides which epoch's weights are kept and when to stop.
//
// The batch-union recall functions measure what serving needs: for a batch
// of tokens, how much of the union of their active neurons the top-k of the
// summed ReLU'd router scores covers (calibration picks k per batch size
// from them).
//
// Everything is deterministic: the same samples and options give the same
// weights bit for bit, whatever the OpenMP thread count (the GEMMs are
// kernels::cpu::Linear, one fixed order per output; the rest runs on one
// thread in a fixed order).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"

namespace polar {

// One layer's training data, in collection order (the held-out split is
// the tail).
struct MlpRouterSamples {
  int64_t num_samples = 0;
  int64_t input_dim = 0;
  int64_t num_neurons = 0;
  std::vector<float> inputs;    // [num_samples, input_dim] router inputs
  std::vector<uint8_t> active;  // [num_samples, num_neurons] 1: fc1 pre-activation > 0
};

struct MlpRouterTrainingOptions {
  int64_t rank = 256;  // inner width; clamped to min(input_dim, num_neurons)
  int32_t max_epochs = 20;
  int32_t batch_size = 128;
  float learning_rate = 1e-3f;
  float weight_decay = 0.01f;        // AdamW (decoupled), on down and up only
  float validation_fraction = 0.1f;  // tail held out for recall, early stopping and k calibration
  int32_t patience = 4;              // epochs without validation improvement before stopping
  uint64_t seed = 1;                 // initialisation and minibatch order
  // Progress after each epoch (1-based): mean training loss, validation recall. May be null.
  std::function<void(int epoch, double loss, double recall)> on_epoch;
};

struct TrainedMlpRouter {
  int64_t rank = 0;
  std::vector<float> down;  // [rank, input_dim], applied to the raw input
  std::vector<float> up;    // [num_neurons, rank]
  std::vector<float> bias;  // [num_neurons]
  // Per held-out sample with an active neuron: the fraction of its active
  // neurons among the router's top-|active| scores; averaged (kept epoch).
  double validation_recall = 0;
  int32_t epochs_run = 0;
  int32_t best_epoch = 0;        // 1-based
  int64_t validation_begin = 0;  // samples [validation_begin, num_samples) were held out
};

absl::StatusOr<TrainedMlpRouter> TrainMlpRouter(const MlpRouterSamples& samples,
                                                const MlpRouterTrainingOptions& options);

// Router scores of samples [begin, end) exactly as the engine computes them
// (two Linear calls): [end - begin, num_neurons].
std::vector<float> MlpRouterScores(const MlpRouterSamples& samples, const TrainedMlpRouter& router, int64_t begin,
                                   int64_t end);

// Random batches for the union recall: `num_batches` batches of
// `batch_size` distinct samples of [begin, end) (fewer when the range is
// smaller), drawn from `seed`.
struct UnionBatches {
  int64_t batch_size = 1;
  int64_t num_batches = 64;
  uint64_t seed = 1;
  int64_t begin = 0;
  int64_t end = 0;
};

// Mean batch-union recall for every k in [0, num_neurons]: result[k] is the
// mean over the batches of |top-k ∩ union| / |union| (1 for an empty
// union), top-k by the column sums of the ReLU'd scores, ranked as serving
// ranks them (ties to the lower neuron id).
absl::StatusOr<std::vector<double>> UnionRecallByK(const MlpRouterSamples& samples, const TrainedMlpRouter& router,
                                                   const UnionBatches& batches);
// The same mean at one k, selecting through the serving kernel
// (kernels::cpu::SelectMlpNeurons): an independent check of UnionRecallByK.
absl::StatusOr<double> UnionRecallAt(const MlpRouterSamples& samples, const TrainedMlpRouter& router, int64_t k,
                                     const UnionBatches& batches);

}  // namespace polar
