// See transformer.h: architecture dispatch, RoPE frequencies, weight upload.
#include "engine/model/transformer.h"

#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"

namespace polar {

absl::StatusOr<std::unique_ptr<TransformerModel>> CreateTransformer(const Checkpoint& checkpoint,
                                                                    Backend& backend,
                                                                    int64_t max_step_tokens) {
  if (absl::Status s = checkpoint.config.Validate(); !s.ok()) return s;
  if (max_step_tokens < 1) return absl::InvalidArgumentError("max_step_tokens must be >= 1");
  switch (checkpoint.config.family) {
    case ArchFamily::kLlama:
      return internal::CreateLlama(checkpoint, backend, max_step_tokens);
    case ArchFamily::kOpt:
      return internal::CreateOpt(checkpoint, backend, max_step_tokens);
  }
  return absl::InternalError("unknown architecture family");
}

std::vector<float> RopeInverseFrequencies(const ModelConfig& config) {
  const int64_t dim = config.head_dim;
  std::vector<float> inv_freq(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv_freq[i] = 1.0f / std::pow(config.rope_theta, exponent);
  }
  const RopeScaling& s = config.rope_scaling;
  if (s.type == RopeScalingType::kLinear) {
    for (float& f : inv_freq) f /= s.factor;
  } else if (s.type == RopeScalingType::kLlama3) {
    // LLaMA-3.1: long wavelengths are slowed by `factor`, short ones kept, and
    // the band between is interpolated smoothly.
    const float old_len = static_cast<float>(s.original_max_position_embeddings);
    const float low_freq_wavelen = old_len / s.low_freq_factor;
    const float high_freq_wavelen = old_len / s.high_freq_factor;
    for (float& f : inv_freq) {
      const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
      if (wavelen < high_freq_wavelen) continue;
      if (wavelen > low_freq_wavelen) {
        f /= s.factor;
        continue;
      }
      const float smooth =
          (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = (1.0f - smooth) * f / s.factor + smooth * f;
    }
  }
  for (size_t i = 0; i < config.rope_freq_factors.size() && i < inv_freq.size(); ++i) {
    inv_freq[i] /= config.rope_freq_factors[i];
  }
  return inv_freq;
}

namespace internal {

absl::StatusOr<Tensor> WeightUploader::Upload(const std::string& name) {
  const HostTensor* t = checkpoint_.Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat(checkpoint_.path, ": missing tensor ", name));
  }
  absl::StatusOr<Tensor> uploaded = backend_.UploadWeight(*t);
  if (!uploaded.ok()) {
    return absl::Status(uploaded.status().code(),
                        absl::StrCat(checkpoint_.path, ": tensor ", name, ": ",
                                     uploaded.status().message()));
  }
  return uploaded;
}

absl::Status WeightUploader::UploadInto(const std::string& name, Tensor& dst) {
  absl::StatusOr<Tensor> t = Upload(name);
  if (!t.ok()) return t.status();
  dst = *t;
  return absl::OkStatus();
}

absl::Status WeightUploader::UploadAll(const std::string& prefix,
                                       std::initializer_list<std::pair<const char*, Tensor*>> names) {
  for (const auto& [name, dst] : names) {
    if (absl::Status s = UploadInto(prefix + name, *dst); !s.ok()) return s;
  }
  return absl::OkStatus();
}

AttentionParams AttentionParamsFor(const ModelConfig& config) {
  AttentionParams params;
  params.num_q_heads = config.num_heads;
  params.num_kv_heads = config.num_kv_heads;
  params.head_dim = config.head_dim;
  params.scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim));
  params.sliding_window = config.sliding_window;
  return params;
}

absl::Status CheckStepFits(const StepBatch& step, int64_t max_tokens) {
  if (step.num_tokens() > max_tokens || static_cast<int64_t>(step.logit_rows.size()) > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("step of ", step.num_tokens(), " tokens exceeds the ",
                                                   max_tokens, " the model was set up for"));
  }
  return absl::OkStatus();
}

absl::Status AllocateScratch(Backend& backend, int64_t rows,
                             std::initializer_list<std::pair<Tensor*, int64_t>> buffers) {
  for (const auto& [dst, cols] : buffers) {
    absl::StatusOr<Tensor> t = backend.AllocateScratch(rows, cols);
    if (!t.ok()) return t.status();
    *dst = *t;
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> WeightUploader::UploadStacked(const std::vector<std::string>& names) {
  std::vector<float> stacked;
  int64_t rows = 0, cols = -1;
  for (const std::string& name : names) {
    const HostTensor* t = checkpoint_.Find(name);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat(checkpoint_.path, ": missing tensor ", name));
    }
    if (t->shape.size() != 2 || (cols >= 0 && t->shape[1] != cols)) {
      return absl::InvalidArgumentError(
          absl::StrCat(checkpoint_.path, ": tensor ", name, " has shape ", t->ShapeString(),
                       ", cannot stack"));
    }
    cols = t->shape[1];
    rows += t->shape[0];
    absl::StatusOr<std::vector<float>> values = ToF32(*t);
    if (!values.ok()) return values.status();
    stacked.insert(stacked.end(), values->begin(), values->end());
  }
  return backend_.UploadWeight(MakeOwnedF32(absl::StrCat(names.front(), "+stacked"), {rows, cols},
                                            std::move(stacked)));
}

}  // namespace internal
}  // namespace polar
