// The Backend interface: the operations one transformer step is made of, at
// the granularity worth fusing on a GPU. Each architecture's forward pass
// (engine/model/llama.cc, opt.cc) is written once against it; cpu/ implements
// it with kernels/cpu and OpenBLAS, cuda/ with kernels/cuda.
//
// Tensors are backend-owned buffers allocated once at start (weights, KV
// blocks, per-step scratch sized for the largest step); a step allocates
// nothing. Row-major 2-D views: a [tokens, heads * head_dim] activation is
// rows = tokens, cols = heads * head_dim.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/host_tensor.h"

namespace polar {

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;

  bool empty() const { return data == nullptr; }
  int64_t size() const { return rows * cols; }
  // The first `n` rows of this tensor (a view; scratch buffers are sized for
  // the largest step and used for smaller ones).
  Tensor FirstRows(int64_t n) const { return Tensor{data, dtype, n, cols}; }
};

// Shape of the paged KV cache: per layer, K and V pools of
// [num_blocks, block_size, num_kv_heads, head_dim].
struct KvCacheLayout {
  int64_t num_layers = 0;
  int64_t num_blocks = 0;
  int64_t block_size = 16;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;

  int64_t BytesPerBlock(int64_t bytes_per_element) const {
    return 2 * num_layers * block_size * num_kv_heads * head_dim * bytes_per_element;
  }
};

// Everything one step needs to know about its batch, in host memory. Built by
// the runtime; its vectors keep their capacity across steps.
struct StepBatch {
  std::vector<int32_t> token_ids;     // [num_tokens] new tokens of all sequences, by sequence
  std::vector<int32_t> positions;     // [num_tokens] their positions in their sequence
  std::vector<int64_t> kv_slots;      // [num_tokens] cache slot = block * block_size + offset
  std::vector<int32_t> q_indptr;      // [num_seqs + 1] token rows of each sequence
  std::vector<int32_t> context_lens;  // [num_seqs] KV length after this step
  std::vector<int32_t> block_indptr;  // [num_seqs + 1]
  std::vector<int32_t> block_ids;     // [block_indptr.back()] block tables, concatenated
  std::vector<int32_t> logit_rows;    // token rows whose logits the step returns
  // [num_seqs] Polar Sparsity: the fraction of KV groups each sequence's
  // decode token attends with, in (0, 1]; 1 = dense. Prefill rows (a
  // sequence with several new tokens) are always dense.
  std::vector<float> density;

  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  int64_t num_seqs() const { return static_cast<int64_t>(context_lens.size()); }
  void Clear();
  // Checks index ranges against the cache; a malformed batch is a bug in the
  // runtime, but the check keeps it from reading out of bounds.
  absl::Status Validate(const KvCacheLayout& kv) const;
};

// How a KV group's score is formed from its query heads' router scores.
enum class GroupScore : int32_t { kMax = 0, kMean = 1 };

// The KV groups attention computes for each sequence of a step (Polar
// Sparsity), CSR in backend memory: indptr [num_seqs + 1] and indices
// [capacity num_seqs * num_groups], int32, ascending within a sequence.
// For MHA a group is one head.
struct GroupSelection {
  Tensor indptr;
  Tensor indices;
};

struct AttentionParams {
  int64_t num_q_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  float scale = 1.0f;
  int64_t sliding_window = 0;  // 0 = full causal attention
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // ---- set-up (once) ----
  // Copies/converts a weight into the backend's compute layout.
  virtual absl::StatusOr<Tensor> UploadWeight(const HostTensor& weight) = 0;
  // A float buffer of [rows, cols] owned by the backend, for activations.
  virtual absl::StatusOr<Tensor> AllocateScratch(int64_t rows, int64_t cols) = 0;
  virtual absl::Status AllocateKvCache(const KvCacheLayout& layout) = 0;
  virtual const KvCacheLayout& kv_layout() const = 0;

  // ---- one step ----
  // Makes the step's indices available to the operations below.
  virtual absl::Status BeginStep(const StepBatch& step) = 0;
  // out[t] = table[token_ids[t]]. table: [vocab, dim]; out: [num_tokens, dim].
  virtual void Embedding(const Tensor& table, Tensor out) = 0;
  // x[t] += table[positions[t] + offset]. table: [max_positions, dim] (OPT).
  virtual void AddPositionEmbedding(const Tensor& table, int64_t offset, Tensor x) = 0;
  virtual void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor out) = 0;
  virtual void LayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                         Tensor out) = 0;
  // out = x · wᵀ + bias (+ out if accumulate). w: [out_features, in]; bias may be empty.
  virtual void Linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor out,
                      bool accumulate = false) = 0;
  // Rotates x: [num_tokens, num_heads * head_dim] in place at the step's positions.
  // inv_freq: [rotary_dim / 2] fp32 (carries rope scaling).
  virtual void Rope(Tensor x, int64_t num_heads, int64_t head_dim, const Tensor& inv_freq) = 0;
  // Writes this step's K and V ([num_tokens, num_kv_heads * head_dim]) to `layer`'s cache.
  virtual void AppendKv(int64_t layer, const Tensor& k, const Tensor& v) = 0;
  // Causal attention of q ([num_tokens, num_q_heads * head_dim]) over `layer`'s cache.
  // With a selection, only the selected KV groups of each sequence are
  // computed and the other heads' outputs are zeros; null: every group.
  virtual void Attention(int64_t layer, const Tensor& q, const AttentionParams& params, Tensor out,
                         const GroupSelection* selection) = 0;

  // ---- head sparsity ----
  // Buffers for the selections of steps of up to `max_seqs` sequences (set-up).
  virtual absl::StatusOr<GroupSelection> AllocateGroupSelection(int64_t max_seqs, int64_t num_groups) = 0;
  // Per sequence of the step, its keep[s] best KV groups by `scores`
  // ([num_tokens, num_q_heads]; a sequence is scored by its last row), ties
  // to the lower group id. keep: host, [num_seqs]; >= num_groups keeps all.
  virtual void SelectHeadGroups(const Tensor& scores, const int32_t* keep, int64_t num_groups, GroupScore reduce,
                                GroupSelection& out) = 0;
  // out[t, h] = L2 norm of head h's slice of x[t] ([num_tokens, num_heads * head_dim]).
  virtual void HeadNorms(const Tensor& x, int64_t num_heads, Tensor out) = 0;
  // Zeroes, in every row of each sequence, the heads of the KV groups its
  // selection leaves out (x: [num_tokens, num_heads * head_dim]).
  virtual void MaskHeadGroups(Tensor x, int64_t num_heads, int64_t num_groups, const GroupSelection& selection) = 0;
  // ---- MLP sparsity (ReLU models: OPT) ----
  // An int32 buffer of `capacity` neuron indices, [1, capacity] (set-up).
  virtual absl::StatusOr<Tensor> AllocateIndices(int64_t capacity) = 0;
  // A new weight holding wᵀ ([w.cols, w.rows]): fc2's neuron-major copy (set-up).
  virtual absl::StatusOr<Tensor> TransposedWeight(const Tensor& w) = 0;
  // The step's one neuron set: the k neurons with the largest sums over the
  // rows of ReLU(scores) ([num_rows, ffn] router logits), ties to the lower
  // id, written ascending to indices[0, k) (kernels/cpu/gather_mlp.h).
  virtual void SelectMlpNeurons(const Tensor& scores, int64_t k, Tensor indices) = 0;
  // The MLP over neurons indices[0, k) only: out (+)= ReLU(x · w1[idx]ᵀ +
  // b1[idx]) · w2t[idx] + b2. x: [rows, in]; w1: [ffn, in] (fc1.weight);
  // w2t: [ffn, out_cols] (fc2.weightᵀ); hidden: scratch of >= rows * k floats.
  // With all neurons it equals Linear, Relu, Linear(accumulate) bit for bit.
  virtual void GatherMlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2t, const Tensor& b2,
                         const Tensor& indices, int64_t k, Tensor hidden, Tensor out, bool accumulate) = 0;
  // Zeroes, in every row of h ([rows, ffn]), the columns not in indices[0, k).
  virtual void MaskMlpNeurons(Tensor h, const Tensor& indices, int64_t k) = 0;

  // out = silu(gate) * up, gate_up: [rows, 2 * width] (gate first), out: [rows, width].
  virtual void SiluMul(const Tensor& gate_up, Tensor out) = 0;
  virtual void Relu(Tensor x) = 0;
  // a += b (same shape).
  virtual void Add(Tensor a, const Tensor& b) = 0;
  // out[i] = x[step.logit_rows[i]].
  virtual void GatherLogitRows(const Tensor& x, Tensor out) = 0;
  // Copies a float tensor to host memory (dst holds rows * cols floats).
  virtual absl::Status CopyToHost(const Tensor& src, float* dst) = 0;
  // Copies dst.rows * dst.cols floats from host memory into a float tensor.
  virtual absl::Status CopyFromHost(const float* src, Tensor dst) = 0;
  // Copies an int32 tensor (e.g. a GroupSelection) to host memory: a device
  // sync on a GPU, so only for opt-in diagnostics (per-head metrics).
  virtual absl::Status CopyIndicesToHost(const Tensor& src, int32_t* dst) = 0;
};

}  // namespace polar
