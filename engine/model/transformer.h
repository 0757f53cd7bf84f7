// A transformer's forward pass over one step of a batch (prefill chunks and
// decode tokens of many sequences together), written once per architecture
// against the Backend interface: llama.cc (LLaMA family) and opt.cc (OPT).
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"
#include "engine/model/head_sparsity.h"
#include "engine/model/mlp_sparsity.h"
#include "engine/model/model_config.h"

namespace polar {

class TransformerModel {
 public:
  virtual ~TransformerModel() = default;
  virtual const ModelConfig& config() const = 0;
  // Runs one step over `step` (already begun on the backend: BeginStep) and
  // writes the logits of step.logit_rows to `logits` ([logit_rows, vocab], host).
  virtual absl::Status Forward(const StepBatch& step, float* logits) = 0;
  // Polar Sparsity's attention heads: routers, selection mode, counters.
  virtual HeadSparsity& heads() = 0;
  // Polar Sparsity's MLP neurons (ReLU models only: OPT); null for models
  // without MLP sparsity (the LLaMA family's SwiGLU).
  virtual MlpSparsity* mlp() { return nullptr; }
};

// Uploads the checkpoint's weights to `backend` and allocates scratch for
// steps of up to `max_step_tokens` tokens. The backend must outlive the model.
absl::StatusOr<std::unique_ptr<TransformerModel>> CreateTransformer(const Checkpoint& checkpoint,
                                                                    Backend& backend,
                                                                    int64_t max_step_tokens);

// Inverse RoPE frequencies [rotary_dim / 2] with the config's rope scaling
// applied, computed in fp32 as the reference implementations do.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

namespace internal {
// Per-architecture constructors (llama.cc, opt.cc).
absl::StatusOr<std::unique_ptr<TransformerModel>> CreateLlama(const Checkpoint& checkpoint,
                                                              Backend& backend, int64_t max_step_tokens);
absl::StatusOr<std::unique_ptr<TransformerModel>> CreateOpt(const Checkpoint& checkpoint,
                                                            Backend& backend, int64_t max_step_tokens);

// Looks up checkpoint tensors by name and uploads them; errors name the
// checkpoint and the tensor.
class WeightUploader {
 public:
  WeightUploader(const Checkpoint& checkpoint, Backend& backend)
      : checkpoint_(checkpoint), backend_(backend) {}
  bool Has(const std::string& name) const { return checkpoint_.Find(name) != nullptr; }
  absl::StatusOr<Tensor> Upload(const std::string& name);
  absl::Status UploadInto(const std::string& name, Tensor& dst);
  // Uploads prefix + name into each destination.
  absl::Status UploadAll(const std::string& prefix,
                         std::initializer_list<std::pair<const char*, Tensor*>> names);
  // Rows of several tensors stacked into one weight ([sum of rows, cols]),
  // e.g. gate_proj over up_proj so one GEMM computes both.
  absl::StatusOr<Tensor> UploadStacked(const std::vector<std::string>& names);

 private:
  const Checkpoint& checkpoint_;
  Backend& backend_;
};
// Attention settings of a config: heads, head dim, 1/sqrt(head_dim) scale,
// sliding window (OPT configs have none).
AttentionParams AttentionParamsFor(const ModelConfig& config);

// INVALID_ARGUMENT when the step has more tokens than `max_tokens`, the rows
// the model's scratch was allocated for.
absl::Status CheckStepFits(const StepBatch& step, int64_t max_tokens);

// Allocates one [rows, cols] scratch buffer per (destination, cols) pair.
absl::Status AllocateScratch(Backend& backend, int64_t rows,
                             std::initializer_list<std::pair<Tensor*, int64_t>> buffers);

}  // namespace internal

}  // namespace polar
