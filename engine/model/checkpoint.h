// Opening a model from disk, whatever its format: a .gguf file or a Hugging
// Face directory (config.json + safetensors). The result names every tensor by
// its Hugging Face name and layout, so one model definition serves both
// formats (GGUF's llama Q/K row permutation is undone here).
#pragma once

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/gguf_file.h"
#include "engine/model/host_tensor.h"
#include "engine/model/model_config.h"

namespace polar {

struct Checkpoint {
  std::string path;    // what was opened
  std::string format;  // "gguf", "safetensors" or "synthetic"
  ModelConfig config;
  // Hugging Face names, e.g. "model.layers.3.self_attn.q_proj.weight",
  // "model.decoder.layers.3.fc1.bias", "lm_head.weight" (absent when tied).
  absl::flat_hash_map<std::string, HostTensor> tensors;
  // Tokenizer sources: the GGUF (its metadata) or a tokenizer.json path.
  std::shared_ptr<const GgufFile> gguf;
  std::string tokenizer_json_path;

  const HostTensor* Find(const std::string& name) const;
};

inline constexpr char kSynthPrefix[] = "synth:";

// Opens a .gguf file, a directory holding config.json + safetensors, or
// "synth:PRESET" (random weights made in memory, see synth.h), and checks
// every tensor the architecture needs against the config.
absl::StatusOr<Checkpoint> OpenCheckpoint(const std::string& path);

// The model config described by a GGUF's metadata (llama family).
absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& gguf);

// A checkpoint from an already opened GGUF: config from its metadata, tensors
// renamed to Hugging Face names, Q/K rows back in Hugging Face order, checked
// with ValidateTensors. OpenCheckpoint uses it for .gguf paths.
absl::StatusOr<Checkpoint> CheckpointFromGguf(std::shared_ptr<const GgufFile> gguf);

// The Hugging Face name of a GGUF tensor ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"); empty when it has none.
std::string HfNameForGgufTensor(const std::string& gguf_name);

// Undoes llama.cpp's convert-time Q/K row permutation: GGUF stores each head's
// rows interleaved (pairs for GGML's adjacent-pair RoPE); Hugging Face stores
// the first halves of the pairs, then the second halves (rotate_half RoPE).
// `tensor` is [n_head * head_dim, ...] (a weight or a bias) in any dtype; whole
// rows move, so quantized blocks stay intact. Returns an owned tensor.
absl::StatusOr<HostTensor> UnpermuteGgufQkRows(const HostTensor& tensor, int64_t n_head);

// Every tensor the config's architecture needs, with its expected shape
// (Hugging Face names). Used to validate checkpoints and to synthesize models.
std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors(const ModelConfig& config);

// Checks presence and shape of every expected tensor; errors name the tensor.
absl::Status ValidateTensors(const Checkpoint& checkpoint);

}  // namespace polar
