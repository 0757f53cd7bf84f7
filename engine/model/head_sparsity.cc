// See head_sparsity.h.
#include "engine/model/head_sparsity.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/model/host_tensor.h"

namespace polar {
namespace {

// SplitMix64 finaliser: the random mode's scores.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

absl::Status HeadSparsity::Init(const ModelConfig& config, Backend& backend, int64_t max_tokens) {
  config_ = config;
  backend_ = &backend;
  routers_ = HeadRouters::DenseFor(config);
  counters_ = std::make_unique<HeadCounters>(config.num_layers);
  absl::StatusOr<Tensor> scores = backend.AllocateScratch(max_tokens, config.num_heads);
  if (!scores.ok()) return scores.status();
  scores_ = *scores;
  // Room for query-head selections (SelectionUnit::kQueryHead), the finest unit.
  absl::StatusOr<GroupSelection> selection = backend.AllocateGroupSelection(max_tokens, config.num_heads);
  if (!selection.ok()) return selection.status();
  selection_ = *selection;
  return absl::OkStatus();
}

absl::Status HeadSparsity::SetRouters(const HeadRouters& routers) {
  if (absl::Status s = routers.Validate(config_); !s.ok()) return s;
  std::vector<Tensor> weights(config_.num_layers), biases(config_.num_layers);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    if (routers.dense[l]) continue;
    absl::StatusOr<Tensor> w = backend_->UploadWeight(
        MakeOwnedF32(absl::StrCat("router.", l, ".weight"), {config_.num_heads, config_.hidden_size}, routers.weight[l]));
    if (!w.ok()) return w.status();
    absl::StatusOr<Tensor> b =
        backend_->UploadWeight(MakeOwnedF32(absl::StrCat("router.", l, ".bias"), {config_.num_heads}, routers.bias[l]));
    if (!b.ok()) return b.status();
    weights[l] = *w;
    biases[l] = *b;
  }
  router_weight_ = std::move(weights);
  router_bias_ = std::move(biases);
  routers_ = routers;
  has_routers_ = true;
  return absl::OkStatus();
}

void HeadSparsity::SetMode(HeadSelectionMode mode, uint64_t seed) {
  mode_ = mode;
  seed_ = seed;
}

bool HeadSparsity::LayerIsDense(int64_t layer) const {
  // Oracle and random selections skip only layer 0 (dense in every
  // configuration); routers skip the layers calibration made dense.
  if (mode_ != HeadSelectionMode::kRouters) return layer == 0;
  return !has_routers_ || routers_.dense[layer];
}

void HeadSparsity::BeginStep(const StepBatch& step) {
  step_ = &step;
  const int64_t num_seqs = step.num_seqs();
  const int64_t groups = units();
  const int64_t group_heads = config_.num_heads / groups;
  keep_.assign(num_seqs, static_cast<int32_t>(groups));
  any_sparse_ = false;
  active_heads_sparse_ = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int32_t q_len = step.q_indptr[s + 1] - step.q_indptr[s];
    if (q_len == 1 && !step.density.empty() && step.density[s] < 1.0f) {
      keep_[s] = GroupsToKeep(step.density[s], groups);
    }
    if (observer_ != nullptr) keep_[s] = static_cast<int32_t>(groups);  // labels need every head
    any_sparse_ = any_sparse_ || keep_[s] < groups;
    active_heads_sparse_ += static_cast<int64_t>(q_len) * keep_[s] * group_heads;
  }
}

void HeadSparsity::Attention(int64_t layer, const Tensor& h, const Tensor& q, const AttentionParams& params,
                             Tensor out) {
  Backend& b = *backend_;
  const int64_t n = q.rows;
  const bool dense = !any_sparse_ || LayerIsDense(layer);
  counters_->total[layer].fetch_add(n * config_.num_heads, std::memory_order_relaxed);
  counters_->active[layer].fetch_add(dense ? n * config_.num_heads : active_heads_sparse_, std::memory_order_relaxed);
  const int64_t groups = units();
  if (counters_->per_head != nullptr && dense) CountPerHead(layer, true, groups);
  Tensor scores = scores_.FirstRows(n);
  // Selecting single query heads of GQA groups: dense, then masked.
  const bool masked = mode_ == HeadSelectionMode::kOracle || groups != config_.num_kv_heads;

  if (dense || masked) {
    b.Attention(layer, q, params, out, nullptr);
    if (observer_ != nullptr) {
      b.HeadNorms(out, config_.num_heads, scores);
      host_input_.resize(h.size());
      host_norms_.resize(scores.size());
      if (b.CopyToHost(h, host_input_.data()).ok() && b.CopyToHost(scores, host_norms_.data()).ok()) {
        observer_->OnLayer(layer, *step_, host_input_, host_norms_);
      }
    }
    if (dense) return;
  }
  if (mode_ == HeadSelectionMode::kOracle) {
    // Each sequence's groups by the total output norm of their heads.
    b.HeadNorms(out, config_.num_heads, scores);
    b.SelectHeadGroups(scores, keep_.data(), groups, GroupScore::kMean, selection_);
  } else if (mode_ == HeadSelectionMode::kRandom) {
    // Scores from (seed, layer, the token's position and id, head) only, so
    // a sequence's draw does not depend on its batch.
    host_norms_.resize(scores.size());
    const int64_t heads = config_.num_heads;
    for (int64_t t = 0; t < n; ++t) {
      const uint64_t row = Mix(seed_ ^ Mix((static_cast<uint64_t>(layer) << 40) ^
                                           (static_cast<uint64_t>(step_->positions[t]) << 20) ^
                                           static_cast<uint64_t>(step_->token_ids[t])));
      for (int64_t h = 0; h < heads; ++h) {
        host_norms_[t * heads + h] = static_cast<float>(Mix(row + h) >> 40) / static_cast<float>(1ull << 24);
      }
    }
    (void)b.CopyFromHost(host_norms_.data(), scores);  // host memory on the CPU; cannot fail
    b.SelectHeadGroups(scores, keep_.data(), groups, GroupScore::kMax, selection_);
  } else {
    b.Linear(h, router_weight_[layer], router_bias_[layer], scores);
    b.SelectHeadGroups(scores, keep_.data(), groups, routers_.group_score, selection_);
  }
  if (masked) {
    b.MaskHeadGroups(out, config_.num_heads, groups, selection_);  // out holds dense attention
  } else {
    b.Attention(layer, q, params, out, &selection_);
  }
  if (counters_->per_head != nullptr) CountPerHead(layer, false, groups);
}

void HeadSparsity::EnablePerHeadCounts() {
  counters_->num_heads = config_.num_heads;
  counters_->per_head.reset(new std::atomic<int64_t>[config_.num_layers * config_.num_heads]());
}

void HeadSparsity::CountPerHead(int64_t layer, bool dense, int64_t units) {
  std::atomic<int64_t>* row = counters_->per_head.get() + layer * config_.num_heads;
  const int64_t num_seqs = step_->num_seqs();
  if (dense) {
    const int64_t tokens = step_->num_tokens();
    for (int64_t h = 0; h < config_.num_heads; ++h) row[h].fetch_add(tokens, std::memory_order_relaxed);
    return;
  }
  host_indptr_.resize(selection_.indptr.size());
  host_indices_.resize(selection_.indices.size());
  if (!backend_->CopyIndicesToHost(selection_.indptr, host_indptr_.data()).ok() ||
      !backend_->CopyIndicesToHost(selection_.indices, host_indices_.data()).ok()) {
    return;
  }
  const int64_t heads_per_unit = config_.num_heads / units;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t q_len = step_->q_indptr[s + 1] - step_->q_indptr[s];
    for (int32_t i = host_indptr_[s]; i < host_indptr_[s + 1]; ++i) {
      for (int64_t h = 0; h < heads_per_unit; ++h) {
        row[host_indices_[i] * heads_per_unit + h].fetch_add(q_len, std::memory_order_relaxed);
      }
    }
  }
}

int64_t HeadSparsity::units() const {
  return unit_ == SelectionUnit::kQueryHead ? config_.num_heads : config_.num_kv_heads;
}

}  // namespace polar
