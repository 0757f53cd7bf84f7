// The LLaMA-family forward pass (LLaMA-2/3, Mistral, Qwen2, SmolLM2):
// RMSNorm → Q/K/V (+bias for Qwen2) → RoPE → paged KV append → causal GQA
// attention → output projection added to the residual → RMSNorm → SwiGLU MLP
// added to the residual; final RMSNorm and LM head only on the rows whose
// logits are wanted.

#include "absl/strings/str_cat.h"
#include "engine/model/transformer.h"

namespace polar::internal {
namespace {

struct LlamaLayer {
  Tensor attn_norm, wq, wk, wv, bq, bk, bv, wo;
  Tensor mlp_norm, w_gate_up, w_down;  // w_gate_up: [2 * ffn, hidden], gate rows first
};

class LlamaModel final : public TransformerModel {
 public:
  LlamaModel(const ModelConfig& config, Backend& backend) : config_(config), backend_(backend) {}
  const ModelConfig& config() const override { return config_; }
  HeadSparsity& heads() override { return heads_; }

  absl::Status Init(const Checkpoint& checkpoint, int64_t max_tokens) {
    WeightUploader up(checkpoint, backend_);
    if (absl::Status s = up.UploadAll("model.", {{"embed_tokens.weight", &embed_}, {"norm.weight", &final_norm_}});
        !s.ok()) {
      return s;
    }
    lm_head_ = embed_;
    if (up.Has("lm_head.weight") && !config_.tie_word_embeddings) {
      if (absl::Status s = up.UploadInto("lm_head.weight", lm_head_); !s.ok()) return s;
    }
    layers_.resize(config_.num_layers);
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      LlamaLayer& L = layers_[l];
      absl::Status s = up.UploadAll(p, {{"input_layernorm.weight", &L.attn_norm},
                                        {"self_attn.q_proj.weight", &L.wq},
                                        {"self_attn.k_proj.weight", &L.wk},
                                        {"self_attn.v_proj.weight", &L.wv},
                                        {"self_attn.o_proj.weight", &L.wo},
                                        {"post_attention_layernorm.weight", &L.mlp_norm},
                                        {"mlp.down_proj.weight", &L.w_down}});
      if (s.ok() && config_.attention_qkv_bias) {
        s = up.UploadAll(p, {{"self_attn.q_proj.bias", &L.bq},
                             {"self_attn.k_proj.bias", &L.bk},
                             {"self_attn.v_proj.bias", &L.bv}});
      }
      if (!s.ok()) return s;
      absl::StatusOr<Tensor> gate_up = up.UploadStacked({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"});
      if (!gate_up.ok()) return gate_up.status();
      L.w_gate_up = *gate_up;
    }
    std::vector<float> inv_freq = RopeInverseFrequencies(config_);
    const int64_t n = static_cast<int64_t>(inv_freq.size());
    absl::StatusOr<Tensor> freq = backend_.UploadWeight(MakeOwnedF32("rope.inv_freq", {n}, std::move(inv_freq)));
    if (!freq.ok()) return freq.status();
    inv_freq_ = *freq;

    const int64_t d = config_.hidden_size;
    if (absl::Status s = AllocateScratch(
            backend_, max_tokens,
            {{&x_, d}, {&h_, d}, {&q_, config_.q_dim()}, {&k_, config_.kv_dim()}, {&v_, config_.kv_dim()},
             {&attn_, config_.q_dim()}, {&gate_up_, 2 * config_.intermediate_size},
             {&mlp_, config_.intermediate_size}, {&last_, d}, {&logits_, config_.vocab_size}});
        !s.ok()) {
      return s;
    }
    attention_ = AttentionParamsFor(config_);
    if (absl::Status s = heads_.Init(config_, backend_, max_tokens); !s.ok()) return s;
    return absl::OkStatus();
  }

  absl::Status Forward(const StepBatch& step, float* logits) override {
    if (absl::Status s = CheckStepFits(step, x_.rows); !s.ok()) return s;
    heads_.BeginStep(step);
    const int64_t n = step.num_tokens();
    const int64_t n_out = static_cast<int64_t>(step.logit_rows.size());
    Backend& b = backend_;
    Tensor x = x_.FirstRows(n), h = h_.FirstRows(n), q = q_.FirstRows(n), k = k_.FirstRows(n),
           v = v_.FirstRows(n), attn = attn_.FirstRows(n), gate_up = gate_up_.FirstRows(n),
           mlp = mlp_.FirstRows(n);
    b.Embedding(embed_, x);
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      const LlamaLayer& L = layers_[l];
      b.RmsNorm(x, L.attn_norm, config_.norm_eps, h);
      b.Linear(h, L.wq, L.bq, q);
      b.Linear(h, L.wk, L.bk, k);
      b.Linear(h, L.wv, L.bv, v);
      b.Rope(q, config_.num_heads, config_.head_dim, inv_freq_);
      b.Rope(k, config_.num_kv_heads, config_.head_dim, inv_freq_);
      b.AppendKv(l, k, v);
      heads_.Attention(l, h, q, attention_, attn);
      b.Linear(attn, L.wo, Tensor{}, x, /*accumulate=*/true);
      b.RmsNorm(x, L.mlp_norm, config_.norm_eps, h);
      b.Linear(h, L.w_gate_up, Tensor{}, gate_up);
      b.SiluMul(gate_up, mlp);
      b.Linear(mlp, L.w_down, Tensor{}, x, /*accumulate=*/true);
    }
    Tensor last = last_.FirstRows(n_out), out = logits_.FirstRows(n_out);
    b.GatherLogitRows(x, last);
    b.RmsNorm(last, final_norm_, config_.norm_eps, last);
    b.Linear(last, lm_head_, Tensor{}, out);
    return b.CopyToHost(out, logits);
  }

 private:
  ModelConfig config_;
  Backend& backend_;
  Tensor embed_, final_norm_, lm_head_, inv_freq_;
  std::vector<LlamaLayer> layers_;
  AttentionParams attention_;
  HeadSparsity heads_;
  // Scratch, [max_step_tokens, *].
  Tensor x_, h_, q_, k_, v_, attn_, gate_up_, mlp_, last_, logits_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TransformerModel>> CreateLlama(const Checkpoint& checkpoint,
                                                              Backend& backend, int64_t max_step_tokens) {
  auto model = std::make_unique<LlamaModel>(checkpoint.config, backend);
  if (absl::Status s = model->Init(checkpoint, max_step_tokens); !s.ok()) return s;
  return model;
}

}  // namespace polar::internal
