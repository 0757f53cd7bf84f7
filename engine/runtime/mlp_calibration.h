// MLP-sparsity calibration (`polar calibrate --mlp`, ReLU models only): from
// a model and calibration text to trained MLP routers and the number of
// neurons k each layer computes per batch-size bucket.
//
// 1. Labels: windows of the text run densely (prefill) with an MlpObserver
//    recording, per layer, each token's router input (the pre-attention
//    normed hidden state) and which fc1 neurons it activates (> 0).
// 2. Routers: one low-rank router per layer (mlp_router_training.h); the
//    tail of the samples is held out.
// 3. k per layer and bucket (the paper's greedy search): from one step up,
//    k grows by a step until the mean recall of the true batch union
//    (neurons active in any token of a random batch of the bucket's largest
//    size, drawn with a fixed seed from the held-out samples) reaches the
//    target (0.99). The step is 128 neurons where ffn >= 1024, else 8; k
//    never exceeds ffn. A k above 0.8 * ffn makes the layer dense at serving.
// Deterministic for fixed options and text.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/model/mlp_router_training.h"
#include "engine/model/mlp_sparsity.h"
#include "engine/runtime/calibration.h"
#include "engine/runtime/model_runner.h"

namespace polar {

struct MlpCalibrationOptions : LabelPassOptions {
  MlpRouterTrainingOptions training;
  std::vector<int32_t> batch_buckets = DefaultMlpBatchBuckets();
  double target_recall = 0.99;
  int64_t recall_batches = 64;  // random held-out batches per bucket
  uint64_t seed = 1;            // the batches (training has its own seed)
};

struct MlpCalibrationResult {
  MlpRouters routers;
  nlohmann::json report;  // per layer: router recall, k and union recall per bucket; timings
};

// Neurons k grows by during the search: 128 where ffn >= 1024, else 8.
int64_t MlpNeuronStep(int64_t ffn);

// Step 1 alone: per layer, the samples of dense prefill windows of `tokens`
// (at most samples_per_layer each). FAILED_PRECONDITION for a model without
// MLP sparsity (not ReLU).
absl::StatusOr<std::vector<MlpRouterSamples>> RecordMlpSamples(ModelRunner& runner, std::span<const int32_t> tokens,
                                                              const MlpCalibrationOptions& options);

// Steps 1-3. The runner's MLP routers are left set to the result.
absl::StatusOr<MlpCalibrationResult> CalibrateMlp(ModelRunner& runner, std::span<const int32_t> tokens,
                                                  const MlpCalibrationOptions& options);

}  // namespace polar
