// See cpu_backend.h.
#include "engine/backend/cpu/cpu_backend.h"

#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/gather_mlp.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/head_select.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/rope.h"

namespace polar {
namespace {

float* F32(const Tensor& t) { return static_cast<float*>(t.data); }
int32_t* I32(const Tensor& t) { return static_cast<int32_t*>(t.data); }

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }

  absl::StatusOr<Tensor> UploadWeight(const HostTensor& weight) override {
    absl::StatusOr<std::vector<float>> values = ToF32(weight);
    if (!values.ok()) return values.status();
    const int64_t cols = weight.shape.empty() ? 1 : weight.shape.back();
    const int64_t rows = cols == 0 ? 0 : static_cast<int64_t>(values->size()) / cols;
    buffers_.push_back(std::move(*values));
    return Tensor{buffers_.back().data(), DType::kF32, rows, cols};
  }

  absl::StatusOr<Tensor> AllocateScratch(int64_t rows, int64_t cols) override {
    if (rows < 0 || cols < 0) return absl::InvalidArgumentError("negative scratch size");
    buffers_.emplace_back(static_cast<size_t>(rows * cols), 0.0f);
    return Tensor{buffers_.back().data(), DType::kF32, rows, cols};
  }

  absl::Status AllocateKvCache(const KvCacheLayout& layout) override {
    layout_ = layout;
    const int64_t per_layer = layout.num_blocks * layout.block_size * layout.num_kv_heads * layout.head_dim;
    // Left uninitialized: attention reads only slots a step has written, and
    // untouched pages of a large pool then cost no memory or start-up time.
    k_cache_.clear();
    v_cache_.clear();
    for (int64_t l = 0; l < layout.num_layers; ++l) {
      k_cache_.emplace_back(new float[per_layer]);
      v_cache_.emplace_back(new float[per_layer]);
    }
    return absl::OkStatus();
  }
  const KvCacheLayout& kv_layout() const override { return layout_; }

  absl::Status BeginStep(const StepBatch& step) override {
    if (absl::Status s = step.Validate(layout_); !s.ok()) return s;
    step_ = &step;
    return absl::OkStatus();
  }

  void Embedding(const Tensor& table, Tensor out) override {
    const int64_t dim = table.cols;
    for (int64_t t = 0; t < out.rows; ++t) {
      std::memcpy(F32(out) + t * dim, F32(table) + step_->token_ids[t] * dim, sizeof(float) * dim);
    }
  }

  void AddPositionEmbedding(const Tensor& table, int64_t offset, Tensor x) override {
    const int64_t dim = table.cols;
    for (int64_t t = 0; t < x.rows; ++t) {
      kernels::cpu::AddInPlace(F32(x) + t * dim, F32(table) + (step_->positions[t] + offset) * dim, dim);
    }
  }

  void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor out) override {
    kernels::cpu::RmsNorm(F32(x), F32(weight), x.rows, x.cols, eps, F32(out));
  }

  void LayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                 Tensor out) override {
    kernels::cpu::LayerNorm(F32(x), F32(weight), F32(bias), x.rows, x.cols, eps, F32(out));
  }

  void Linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor out,
              bool accumulate) override {
    kernels::cpu::Linear(F32(x), F32(w), bias.empty() ? nullptr : F32(bias), x.rows, x.cols, w.rows,
                         F32(out), accumulate);
  }

  void Rope(Tensor x, int64_t num_heads, int64_t head_dim, const Tensor& inv_freq) override {
    kernels::cpu::ApplyRope(F32(x), step_->positions.data(), x.rows, num_heads, head_dim,
                            inv_freq.cols * 2, F32(inv_freq));
  }

  void AppendKv(int64_t layer, const Tensor& k, const Tensor& v) override {
    kernels::cpu::AppendKv(F32(k), F32(v), step_->kv_slots.data(), k.rows, k.cols,
                           k_cache_[layer].get(), v_cache_[layer].get());
  }

  void Attention(int64_t layer, const Tensor& q, const AttentionParams& params, Tensor out,
                 const GroupSelection* selection) override {
    kernels::cpu::PagedAttentionParams p;
    p.q = F32(q);
    p.k_cache = k_cache_[layer].get();
    p.v_cache = v_cache_[layer].get();
    p.out = F32(out);
    p.num_seqs = step_->num_seqs();
    p.num_q_heads = params.num_q_heads;
    p.num_kv_heads = params.num_kv_heads;
    p.head_dim = params.head_dim;
    p.block_size = layout_.block_size;
    p.q_indptr = step_->q_indptr.data();
    p.context_lens = step_->context_lens.data();
    p.block_indptr = step_->block_indptr.data();
    p.block_ids = step_->block_ids.data();
    p.scale = params.scale;
    p.sliding_window = params.sliding_window;
    if (selection != nullptr) {
      p.group_indptr = I32(selection->indptr);
      p.group_indices = I32(selection->indices);
    }
    kernels::cpu::PagedAttention(p);
  }

  absl::StatusOr<GroupSelection> AllocateGroupSelection(int64_t max_seqs, int64_t num_groups) override {
    if (max_seqs < 1 || num_groups < 1) return absl::InvalidArgumentError("empty group selection");
    index_buffers_.emplace_back(static_cast<size_t>(max_seqs + 1), 0);
    Tensor indptr{index_buffers_.back().data(), DType::kI32, 1, max_seqs + 1};
    index_buffers_.emplace_back(static_cast<size_t>(max_seqs * num_groups), 0);
    Tensor indices{index_buffers_.back().data(), DType::kI32, 1, max_seqs * num_groups};
    return GroupSelection{indptr, indices};
  }

  void SelectHeadGroups(const Tensor& scores, const int32_t* keep, int64_t num_groups, GroupScore reduce,
                        GroupSelection& out) override {
    const int64_t num_seqs = step_->num_seqs();
    score_rows_.resize(num_seqs);
    for (int64_t s = 0; s < num_seqs; ++s) score_rows_[s] = step_->q_indptr[s + 1] - 1;
    kernels::cpu::HeadSelectParams p;
    p.scores = F32(scores);
    p.score_rows = score_rows_.data();
    p.keep = keep;
    p.num_seqs = num_seqs;
    p.num_heads = scores.cols;
    p.num_groups = num_groups;
    p.reduce = reduce == GroupScore::kMean ? kernels::cpu::GroupScoreReduce::kMean
                                           : kernels::cpu::GroupScoreReduce::kMax;
    p.indptr = I32(out.indptr);
    p.indices = I32(out.indices);
    kernels::cpu::SelectHeadGroups(p);
  }

  void HeadNorms(const Tensor& x, int64_t num_heads, Tensor out) override {
    kernels::cpu::HeadNorms(F32(x), x.rows, num_heads, x.cols / num_heads, F32(out));
  }

  void MaskHeadGroups(Tensor x, int64_t num_heads, int64_t num_groups, const GroupSelection& selection) override {
    kernels::cpu::MaskHeadGroups(F32(x), step_->num_seqs(), step_->q_indptr.data(), num_heads, num_groups,
                                 x.cols / num_heads, I32(selection.indptr), I32(selection.indices));
  }

  absl::StatusOr<Tensor> AllocateIndices(int64_t capacity) override {
    if (capacity < 1) return absl::InvalidArgumentError("empty index buffer");
    index_buffers_.emplace_back(static_cast<size_t>(capacity), 0);
    return Tensor{index_buffers_.back().data(), DType::kI32, 1, capacity};
  }

  absl::StatusOr<Tensor> TransposedWeight(const Tensor& w) override {
    std::vector<float> t(static_cast<size_t>(w.size()));
    const float* src = F32(w);
    for (int64_t r = 0; r < w.rows; ++r) {
      for (int64_t c = 0; c < w.cols; ++c) t[c * w.rows + r] = src[r * w.cols + c];
    }
    buffers_.push_back(std::move(t));
    return Tensor{buffers_.back().data(), DType::kF32, w.cols, w.rows};
  }

  void SelectMlpNeurons(const Tensor& scores, int64_t k, Tensor indices) override {
    kernels::cpu::SelectMlpNeurons(F32(scores), scores.rows, scores.cols, k, I32(indices));
  }

  void GatherMlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2t, const Tensor& b2,
                 const Tensor& indices, int64_t k, Tensor hidden, Tensor out, bool accumulate) override {
    kernels::cpu::GatherFc1Relu(F32(x), F32(w1), F32(b1), I32(indices), x.rows, x.cols, k, F32(hidden));
    kernels::cpu::GatherFc2(F32(hidden), F32(w2t), F32(b2), I32(indices), x.rows, k, out.cols, F32(out), accumulate);
  }

  void MaskMlpNeurons(Tensor h, const Tensor& indices, int64_t k) override {
    kernels::cpu::MaskMlpNeurons(F32(h), h.rows, h.cols, I32(indices), k);
  }

  void SiluMul(const Tensor& gate_up, Tensor out) override {
    kernels::cpu::SiluMul(F32(gate_up), gate_up.rows, out.cols, F32(out));
  }

  void Relu(Tensor x) override { kernels::cpu::Relu(F32(x), x.size()); }

  void Add(Tensor a, const Tensor& b) override { kernels::cpu::AddInPlace(F32(a), F32(b), a.size()); }

  void GatherLogitRows(const Tensor& x, Tensor out) override {
    for (size_t i = 0; i < step_->logit_rows.size(); ++i) {
      std::memcpy(F32(out) + i * x.cols, F32(x) + step_->logit_rows[i] * x.cols, sizeof(float) * x.cols);
    }
  }

  absl::Status CopyToHost(const Tensor& src, float* dst) override {
    std::memcpy(dst, src.data, sizeof(float) * src.size());
    return absl::OkStatus();
  }

  absl::Status CopyIndicesToHost(const Tensor& src, int32_t* dst) override {
    std::memcpy(dst, src.data, sizeof(int32_t) * src.size());
    return absl::OkStatus();
  }

  absl::Status CopyFromHost(const float* src, Tensor dst) override {
    std::memcpy(dst.data, src, sizeof(float) * dst.size());
    return absl::OkStatus();
  }

 private:
  // A deque keeps element addresses stable as buffers are added.
  std::deque<std::vector<float>> buffers_;
  std::deque<std::vector<int32_t>> index_buffers_;  // group selections, neuron indices
  std::vector<int32_t> score_rows_;                 // per step: each sequence's last row
  KvCacheLayout layout_;
  std::vector<std::unique_ptr<float[]>> k_cache_;  // per layer: [num_blocks, block_size, n_kv_heads, head_dim]
  std::vector<std::unique_ptr<float[]>> v_cache_;
  const StepBatch* step_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace polar
