// The architecture facts the engine needs, independent of the file format the
// model came in. Filled from a Hugging Face config.json, from GGUF metadata, or
// from a synthetic preset.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace polar {

enum class ArchFamily {
  kLlama,  // LLaMA-2/3, Mistral, Qwen2, SmolLM2: RMSNorm, RoPE, SwiGLU, GQA
  kOpt,    // OPT: LayerNorm, learned positions (+2 offset), ReLU MLP, biases
};

enum class RopeScalingType { kNone, kLinear, kLlama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  float factor = 1.0f;
  // LLaMA-3.1 style frequency-dependent scaling.
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  ArchFamily family = ArchFamily::kLlama;
  // The concrete model type as named by its source: "llama", "mistral", "qwen2", "opt".
  std::string model_type;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;        // d_model
  int64_t intermediate_size = 0;  // MLP width (OPT: ffn_dim)
  int64_t num_layers = 0;
  int64_t num_heads = 0;     // query heads
  int64_t num_kv_heads = 0;  // == num_heads for MHA
  int64_t head_dim = 0;      // usually hidden_size / num_heads
  int64_t max_position_embeddings = 0;

  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  // Per-frequency divisors of the inverse frequencies, [head_dim / 2]; how
  // LLaMA-3.1 GGUFs store their rope scaling (tensor rope_freqs.weight).
  // Empty: none.
  std::vector<float> rope_freq_factors;
  int64_t sliding_window = 0;  // 0 = full attention (Mistral v0.1 uses 4096)

  bool tie_word_embeddings = false;
  bool attention_qkv_bias = false;  // Qwen2: biases on q/k/v only
  bool attention_out_bias = false;  // OPT: bias on the output projection
  bool mlp_bias = false;            // OPT: biases on fc1/fc2

  // OPT only.
  int64_t word_embed_proj_dim = 0;   // != hidden_size: project_in/project_out exist (opt-350m)
  bool do_layer_norm_before = true;  // false: post-LN (opt-350m)
  int64_t position_offset = 2;       // OPT's learned positions start at index 2

  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  int64_t group_size() const { return num_heads / num_kv_heads; }

  // Checks internal consistency (positive sizes, heads divide, ...).
  absl::Status Validate() const;
};

// Parses a Hugging Face config.json text. `source` names the file in errors.
absl::StatusOr<ModelConfig> ParseHfConfig(const std::string& json_text, const std::string& source);

// Writes a Hugging Face config.json text that ParseHfConfig (and transformers) read back.
std::string ToHfConfigJson(const ModelConfig& config);
// The same, naming the stored weights' dtype ("float32", "float16", "bfloat16").
std::string ToHfConfigJson(const ModelConfig& config, const std::string& torch_dtype);

}  // namespace polar
