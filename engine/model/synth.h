// Synthetic models: named architecture presets (tiny ones for tests, the
// published shapes of common 7B-66B models for benchmarks) and random weights
// created in memory, so a benchmark never needs a multi-gigabyte download and
// a test can compare Polar with transformers on a model written to disk.
//
// Weights are deterministic in (seed, tensor name, element index) through a
// counter-based generator, so they do not depend on the thread count and any
// tensor can be regenerated alone.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/checkpoint.h"
#include "engine/model/dtype.h"
#include "engine/model/model_config.h"

namespace polar {

// "tiny-llama", "tiny-llama3", "tiny-qwen2", "tiny-opt", "tiny-opt-proj",
// "llama-2-7b", "llama-3-8b", "llama-3.1-8b", "mistral-7b", "qwen2.5-7b",
// "opt-6.7b", "opt-66b".
std::vector<std::string> SynthPresetNames();

// The preset's config; NotFound (listing the presets) for an unknown name.
absl::StatusOr<ModelConfig> SynthPresetConfig(std::string_view name);

// Every tensor of ExpectedTensors(config), in `dtype` (F32, F16 or BF16), owned
// in memory. Linear weights ~ N(0, 1/in_features) (activations keep unit
// scale, so logits spread over a few units), norm weights 1 + N(0, 0.1^2),
// biases N(0, 0.05^2). Uses all cores.
absl::StatusOr<Checkpoint> SynthesizeCheckpoint(const ModelConfig& config, uint64_t seed, DType dtype);

// Writes config.json + model.safetensors into `dir` (created if needed).
// Quantized tensors (a checkpoint opened from GGUF) are written as F32.
absl::Status WriteHfModel(const Checkpoint& checkpoint, const std::string& dir);

// The same, split into shards of at most `max_shard_bytes` (a bigger tensor
// gets a shard of its own) listed by model.safetensors.index.json, as
// transformers' save_pretrained does; <= 0 means one file.
absl::Status WriteHfModel(const Checkpoint& checkpoint, const std::string& dir, int64_t max_shard_bytes);

}  // namespace polar
