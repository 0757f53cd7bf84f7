// MLP sparsity for ReLU models (Polar Sparsity's MLP half, OPT only): per
// layer a low-rank router predicts which fc1 neurons a token activates; a
// step computes only the top-k neurons of the batch's summed scores, one set
// for the whole batch (the batch union), through the gather-GEMM pair
// (kernels/cpu/gather_mlp.h). LLaMA-family models have SwiGLU MLPs, not
// ReLU: nothing in them is exactly zero, so they get no MLP sparsity.
//
// Router (per layer, on the same pre-attention normed input the head router
// scores, as in the paper): scores = up · (down · x) + bias, down [rank,
// hidden], up [ffn, rank]; no activation or bias in between, so it is a
// low-rank linear map. k comes per layer and per batch-size bucket (the
// union of active neurons grows with the batch): bucket i covers batches
// of (bucket_max_batch[i-1], bucket_max_batch[i]] sequences, the last one
// every larger batch too. A layer whose k exceeds 0.8 * ffn runs dense (the
// gather saves too little there).
//
// When a step is sparse: MLP routers are loaded, no observer is recording,
// and every sequence of the step decodes one token at a density below 1.
// Otherwise the step's MLP is dense: prefill (as in the paper), and any
// step holding a dense (density 1) sequence, so a density-1 request is
// served bit for bit as without routers. The neuron set depends on the whole
// batch, so, unlike head sparsity, a sparse sequence's MLP output depends
// on what it is batched with: that is the method's design.
//
// Routers file (`polar calibrate --mlp`; the engine's --mlp-routers):
// safetensors with per layer `layers.{l}.down` [rank, hidden], `layers.{l}.up`
// [ffn, rank], `layers.{l}.bias` [ffn] (F32) and string metadata
// "polar.mlp_routers" = "1", "num_layers", "hidden_size", "ffn_size",
// "rank", "batch_buckets" (JSON array of each bucket's largest batch,
// ascending) and "neurons" (JSON array per layer of k per bucket, in
// [1, ffn]). A file of its own, so the head routers' format stays as it is.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/layer_counters.h"
#include "engine/model/model_config.h"

namespace polar {

// The batch-size buckets k is calibrated for: 1, 2-4, 5-8, 9-16, 17-32,
// 33-64, 65+ (calibrated at 128: the union saturates towards dense there).
inline const std::vector<int32_t>& DefaultMlpBatchBuckets() {
  static const std::vector<int32_t> buckets = {1, 4, 8, 16, 32, 64, 128};
  return buckets;
}

struct MlpRouters {
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t ffn_size = 0;
  int64_t rank = 0;
  std::vector<int32_t> bucket_max_batch;      // [buckets] ascending
  std::vector<std::vector<float>> down;       // [num_layers] of [rank * hidden]
  std::vector<std::vector<float>> up;         // [num_layers] of [ffn * rank]
  std::vector<std::vector<float>> bias;       // [num_layers] of [ffn]
  std::vector<std::vector<int32_t>> neurons;  // [num_layers] of [buckets] k, in [1, ffn]

  // Routers shaped for `config` at `rank`: zero weights, default buckets,
  // k = ffn everywhere (dense).
  static MlpRouters ZerosFor(const ModelConfig& config, int64_t rank);
  // Reads a routers file and checks it fits `config`; errors name the file.
  static absl::StatusOr<MlpRouters> Load(const std::string& path, const ModelConfig& config);
  absl::Status Save(const std::string& path) const;
  // Shapes consistent and, for `config`, matching; weights finite; k in range.
  absl::Status Validate(const ModelConfig& config) const;
  // The bucket of a step of `batch` sequences.
  int64_t Bucket(int64_t batch) const;
};

// How a sparse step computes its MLP: only the selected neurons (serving),
// or densely with the unselected activations zeroed before fc2 (the
// reference the exactness tests compare against; equal bit for bit).
enum class MlpExecution { kGather, kMasked };

// Sees each layer's router input and dense fc1 pre-activations (the
// calibration labels: a neuron is active where its pre-activation is > 0),
// copied to the host. While one is set, every MLP runs dense.
class MlpObserver {
 public:
  virtual ~MlpObserver() = default;
  // router_input: [num_tokens, hidden]; preactivation: [num_tokens, ffn].
  virtual void OnLayer(int64_t layer, const StepBatch& step, std::span<const float> router_input,
                       std::span<const float> preactivation) = 0;
};

// Per layer, cumulative: fc1 neurons computed and neurons in total, each
// counted once per token.
using MlpCounters = LayerCounters;

// One layer's MLP weights as the model uploaded them.
struct MlpLayerWeights {
  Tensor fc1;  // [ffn, hidden]
  Tensor b1;   // [1, ffn]
  Tensor fc2;  // [hidden, ffn]
  Tensor b2;   // [1, hidden]
};

class MlpSparsity {
 public:
  // The model's MLP weights per layer; scratch for steps of up to
  // `max_tokens` tokens comes with the routers.
  absl::Status Init(const ModelConfig& config, Backend& backend, int64_t max_tokens,
                    std::vector<MlpLayerWeights> layers);
  // Uploads trained routers (validated against the model) and makes the
  // neuron-major copy of each fc2 (once).
  absl::Status SetRouters(const MlpRouters& routers);
  const MlpRouters* routers() const { return has_routers_ ? &routers_ : nullptr; }
  void SetObserver(MlpObserver* observer) { observer_ = observer; }
  void SetExecution(MlpExecution execution) { execution_ = execution; }
  // A layer runs dense when its k exceeds fraction * ffn (default 0.8; the
  // exactness tests raise it to force the gather path at k = ffn).
  void SetDenseAbove(float fraction) { dense_above_ = fraction; }

  // Once per step, after the backend's BeginStep.
  void BeginStep(const StepBatch& step);
  // Whether this step's MLPs may be sparse (see the top of this file).
  bool sparse_step() const { return sparse_step_; }
  // Picks `layer`'s neurons from its router input ([num_tokens, hidden],
  // the pre-attention normed state); call before that buffer is reused.
  void Route(int64_t layer, const Tensor& router_input);
  // x += fc2(ReLU(fc1(in))) over the neurons Route picked, or all of them.
  // in: [num_tokens, hidden]; hidden: scratch [>= num_tokens, ffn]; x: [num_tokens, hidden].
  void Forward(int64_t layer, const Tensor& in, Tensor hidden, Tensor x);

  const MlpCounters& counters() const { return *counters_; }

 private:
  ModelConfig config_;
  Backend* backend_ = nullptr;
  int64_t max_tokens_ = 0;
  std::vector<MlpLayerWeights> layers_;
  std::vector<Tensor> fc2_t_;  // [num_layers] of [ffn, hidden]; made with the first routers
  MlpRouters routers_;
  bool has_routers_ = false;
  std::vector<Tensor> down_, up_, bias_;  // per layer, on the backend
  Tensor low_;                            // [max_tokens, rank] router's inner state
  Tensor scores_;                         // [max_tokens, ffn] router logits
  Tensor indices_;                        // [1, ffn] the layer's neuron set
  MlpObserver* observer_ = nullptr;
  MlpExecution execution_ = MlpExecution::kGather;
  float dense_above_ = 0.8f;
  const StepBatch* step_ = nullptr;
  bool sparse_step_ = false;
  int64_t bucket_ = 0;
  int64_t layer_k_ = -1;  // neurons Route picked for the current layer; -1: dense
  std::vector<float> host_input_, host_preact_;  // observer copies
  std::unique_ptr<MlpCounters> counters_;
};

}  // namespace polar
