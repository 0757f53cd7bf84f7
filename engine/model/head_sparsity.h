// The attention step of a layer under Polar Sparsity, shared by every
// architecture's forward pass (llama.cc, opt.cc): each decoding sequence
// computes only the KV groups picked for it, the other heads' outputs are
// zeros (so the dense output projection that follows sees exactly what
// masking would give). Q/K/V stay dense and every head's K/V is appended
// before attention, so a head skipped now is exact when picked later.
//
// Who picks (HeadSelectionMode): the trained routers (serving), or for
// evaluation the oracle (each token's heads by their true output norm:
// attention runs dense and the rest is masked, which the exactness tests
// show equals the sparse computation) or a seeded random choice.
// Prefill rows and dense layers always compute every head; a sequence's
// density comes from StepBatch::density (1 or absent: dense).
//
// It also counts heads computed and heads in total per layer (per token) for
// the metrics, from host-side numbers only: no device sync.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend/backend.h"
#include "engine/model/head_routers.h"
#include "engine/model/layer_counters.h"
#include "engine/model/model_config.h"

namespace polar {

enum class HeadSelectionMode { kRouters, kOracle, kRandom };

// What a density counts. Serving selects whole KV groups (their K/V read
// once, the unit the kernels skip). For GQA models evaluation can also
// select single query heads: attention then runs dense and the unselected
// heads are masked (equal to computing only them, but no kernel does that
// for part of a group, so it saves nothing: an accuracy study only).
enum class SelectionUnit { kKvGroup, kQueryHead };

// Sees each layer's router input and dense per-head output norms (the
// calibration labels), copied to the host. While one is set, attention runs
// dense for every sequence.
class HeadObserver {
 public:
  virtual ~HeadObserver() = default;
  // router_input: [num_tokens, hidden]; head_norms: [num_tokens, num_heads].
  virtual void OnLayer(int64_t layer, const StepBatch& step, std::span<const float> router_input,
                       std::span<const float> head_norms) = 0;
};

// Per layer, cumulative over steps: heads computed and heads in total, each
// counted once per token.
struct HeadCounters : LayerCounters {
  using LayerCounters::LayerCounters;
  // Opt-in (HeadSparsity::EnablePerHeadCounts): [num_layers * num_heads],
  // tokens for which each query head was computed; null when off.
  std::unique_ptr<std::atomic<int64_t>[]> per_head;
  int64_t num_heads = 0;
};

class HeadSparsity {
 public:
  // Allocates the selection and score buffers for steps of up to `max_tokens`.
  absl::Status Init(const ModelConfig& config, Backend& backend, int64_t max_tokens);
  // Uploads trained routers (validated against the model).
  absl::Status SetRouters(const HeadRouters& routers);
  const HeadRouters* routers() const { return has_routers_ ? &routers_ : nullptr; }
  void SetMode(HeadSelectionMode mode, uint64_t seed);
  void SetUnit(SelectionUnit unit) { unit_ = unit; }
  void SetObserver(HeadObserver* observer) { observer_ = observer; }

  // Once per step, after the backend's BeginStep.
  void BeginStep(const StepBatch& step);
  // Attention of `layer` for q ([num_tokens, q_dim]) into out; h is the
  // layer's normed input ([num_tokens, hidden]), what the routers score.
  void Attention(int64_t layer, const Tensor& h, const Tensor& q, const AttentionParams& params, Tensor out);

  const HeadCounters& counters() const { return *counters_; }
  // Counts, per layer and query head, the tokens each head was computed for
  // (HeadCounters::per_head). Costs a copy of each step's selection to the
  // host (a sync on a GPU backend): opt-in. Call before serving starts.
  void EnablePerHeadCounts();

 private:
  bool LayerIsDense(int64_t layer) const;
  int64_t units() const;  // KV groups or query heads, per unit_

  ModelConfig config_;
  Backend* backend_ = nullptr;
  HeadRouters routers_;
  bool has_routers_ = false;
  HeadSelectionMode mode_ = HeadSelectionMode::kRouters;
  uint64_t seed_ = 0;
  SelectionUnit unit_ = SelectionUnit::kKvGroup;
  HeadObserver* observer_ = nullptr;
  std::vector<Tensor> router_weight_, router_bias_;  // per layer; empty for dense layers
  Tensor scores_;       // [max_tokens, num_heads] router logits or head norms
  GroupSelection selection_;
  const StepBatch* step_ = nullptr;
  std::vector<int32_t> keep_;  // [num_seqs] groups per sequence this step
  bool any_sparse_ = false;    // some sequence keeps fewer than all groups
  int64_t active_heads_sparse_ = 0;  // heads computed per sparse layer this step (all tokens)
  std::vector<float> host_input_, host_norms_;  // observer copies
  std::vector<int32_t> host_indptr_, host_indices_;  // per-head counts
  void CountPerHead(int64_t layer, bool dense, int64_t units);
  std::unique_ptr<HeadCounters> counters_;
};

}  // namespace polar
