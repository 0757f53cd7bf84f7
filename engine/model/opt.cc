// The OPT forward pass: learned positions (looked up at position + 2, OPT's
// offset), LayerNorm, MHA with biases, ReLU MLP with biases. Supports the small
// OPTs' projection dims (word_embed_proj_dim != hidden: project_in/out) and
// post-LN layers (do_layer_norm_before = false, as in opt-350m). The MLP
// may run over the batch's predicted neurons only (mlp_sparsity.h), routed
// from the attention's input like the head routers.

#include "absl/strings/str_cat.h"
#include "engine/model/transformer.h"

namespace polar::internal {
namespace {

struct OptLayer {
  Tensor attn_ln_w, attn_ln_b, wq, bq, wk, bk, wv, bv, wo, bo;
  Tensor mlp_ln_w, mlp_ln_b, fc1, b1, fc2, b2;
};

class OptModel final : public TransformerModel {
 public:
  OptModel(const ModelConfig& config, Backend& backend) : config_(config), backend_(backend) {}
  const ModelConfig& config() const override { return config_; }
  HeadSparsity& heads() override { return heads_; }
  MlpSparsity* mlp() override { return &mlp_sparsity_; }

  absl::Status Init(const Checkpoint& checkpoint, int64_t max_tokens) {
    WeightUploader up(checkpoint, backend_);
    const std::string d = "model.decoder.";
    has_projection_ = config_.word_embed_proj_dim != 0 && config_.word_embed_proj_dim != config_.hidden_size;
    has_final_ln_ = up.Has(d + "final_layer_norm.weight");
    absl::Status s = up.UploadAll(d, {{"embed_tokens.weight", &embed_}, {"embed_positions.weight", &positions_}});
    if (s.ok() && has_projection_) {
      s = up.UploadAll(d, {{"project_in.weight", &project_in_}, {"project_out.weight", &project_out_}});
    }
    if (s.ok() && has_final_ln_) {
      s = up.UploadAll(d, {{"final_layer_norm.weight", &final_ln_w_}, {"final_layer_norm.bias", &final_ln_b_}});
    }
    lm_head_ = embed_;
    if (s.ok() && up.Has("lm_head.weight") && !config_.tie_word_embeddings) {
      s = up.UploadInto("lm_head.weight", lm_head_);
    }
    if (!s.ok()) return s;
    layers_.resize(config_.num_layers);
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      OptLayer& L = layers_[l];
      s = up.UploadAll(absl::StrCat(d, "layers.", l, "."),
                       {{"self_attn_layer_norm.weight", &L.attn_ln_w},
                        {"self_attn_layer_norm.bias", &L.attn_ln_b},
                        {"self_attn.q_proj.weight", &L.wq}, {"self_attn.q_proj.bias", &L.bq},
                        {"self_attn.k_proj.weight", &L.wk}, {"self_attn.k_proj.bias", &L.bk},
                        {"self_attn.v_proj.weight", &L.wv}, {"self_attn.v_proj.bias", &L.bv},
                        {"self_attn.out_proj.weight", &L.wo}, {"self_attn.out_proj.bias", &L.bo},
                        {"final_layer_norm.weight", &L.mlp_ln_w}, {"final_layer_norm.bias", &L.mlp_ln_b},
                        {"fc1.weight", &L.fc1}, {"fc1.bias", &L.b1}, {"fc2.weight", &L.fc2},
                        {"fc2.bias", &L.b2}});
      if (!s.ok()) return s;
    }
    const int64_t h = config_.hidden_size;
    const int64_t proj = has_projection_ ? config_.word_embed_proj_dim : h;
    s = AllocateScratch(backend_, max_tokens,
                        {{&x_, h}, {&h_, h}, {&q_, h}, {&k_, h}, {&v_, h}, {&attn_, h},
                         {&mlp_, config_.intermediate_size}, {&embed_out_, proj}, {&last_, h},
                         {&last_proj_, proj}, {&logits_, config_.vocab_size}});
    if (!s.ok()) return s;
    attention_ = AttentionParamsFor(config_);
    if (absl::Status s = heads_.Init(config_, backend_, max_tokens); !s.ok()) return s;
    std::vector<MlpLayerWeights> mlp_weights;
    for (const OptLayer& L : layers_) mlp_weights.push_back({L.fc1, L.b1, L.fc2, L.b2});
    return mlp_sparsity_.Init(config_, backend_, max_tokens, std::move(mlp_weights));
  }

  absl::Status Forward(const StepBatch& step, float* logits) override {
    if (absl::Status s = CheckStepFits(step, x_.rows); !s.ok()) return s;
    heads_.BeginStep(step);
    mlp_sparsity_.BeginStep(step);
    const int64_t n = step.num_tokens();
    const int64_t n_out = static_cast<int64_t>(step.logit_rows.size());
    Backend& b = backend_;
    const float eps = config_.norm_eps;
    const bool pre_ln = config_.do_layer_norm_before;
    Tensor x = x_.FirstRows(n), h = h_.FirstRows(n), q = q_.FirstRows(n), k = k_.FirstRows(n),
           v = v_.FirstRows(n), attn = attn_.FirstRows(n), mlp = mlp_.FirstRows(n);
    if (has_projection_) {
      Tensor e = embed_out_.FirstRows(n);
      b.Embedding(embed_, e);
      b.Linear(e, project_in_, Tensor{}, x);
    } else {
      b.Embedding(embed_, x);
    }
    b.AddPositionEmbedding(positions_, config_.position_offset, x);
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      const OptLayer& L = layers_[l];
      // Pre-LN normalizes the sublayer input; post-LN feeds the residual
      // stream itself and normalizes after the residual add.
      Tensor in = x;
      if (pre_ln) {
        b.LayerNorm(x, L.attn_ln_w, L.attn_ln_b, eps, h);
        in = h;
      }
      b.Linear(in, L.wq, L.bq, q);
      b.Linear(in, L.wk, L.bk, k);
      b.Linear(in, L.wv, L.bv, v);
      b.AppendKv(l, k, v);
      heads_.Attention(l, in, q, attention_, attn);  // routers score the attention's input
      mlp_sparsity_.Route(l, in);  // so does the MLP router, before `in` is overwritten
      b.Linear(attn, L.wo, L.bo, x, /*accumulate=*/true);
      if (!pre_ln) b.LayerNorm(x, L.attn_ln_w, L.attn_ln_b, eps, x);
      in = x;
      if (pre_ln) {
        b.LayerNorm(x, L.mlp_ln_w, L.mlp_ln_b, eps, h);
        in = h;
      }
      mlp_sparsity_.Forward(l, in, mlp, x);  // x += fc2(ReLU(fc1(in))), dense or over the routed neurons
      if (!pre_ln) b.LayerNorm(x, L.mlp_ln_w, L.mlp_ln_b, eps, x);
    }
    Tensor last = last_.FirstRows(n_out), out = logits_.FirstRows(n_out);
    b.GatherLogitRows(x, last);
    if (has_final_ln_) b.LayerNorm(last, final_ln_w_, final_ln_b_, eps, last);
    if (has_projection_) {
      Tensor projected = last_proj_.FirstRows(n_out);
      b.Linear(last, project_out_, Tensor{}, projected);
      b.Linear(projected, lm_head_, Tensor{}, out);
    } else {
      b.Linear(last, lm_head_, Tensor{}, out);
    }
    return b.CopyToHost(out, logits);
  }

 private:
  ModelConfig config_;
  Backend& backend_;
  bool has_projection_ = false, has_final_ln_ = false;
  Tensor embed_, positions_, project_in_, project_out_, final_ln_w_, final_ln_b_, lm_head_;
  std::vector<OptLayer> layers_;
  AttentionParams attention_;
  HeadSparsity heads_;
  MlpSparsity mlp_sparsity_;
  // Scratch, [max_step_tokens, *].
  Tensor x_, h_, q_, k_, v_, attn_, mlp_, embed_out_, last_, last_proj_, logits_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TransformerModel>> CreateOpt(const Checkpoint& checkpoint,
                                                            Backend& backend, int64_t max_step_tokens) {
  auto model = std::make_unique<OptModel>(checkpoint.config, backend);
  if (absl::Status s = model->Init(checkpoint, max_step_tokens); !s.ok()) return s;
  return model;
}

}  // namespace polar::internal
