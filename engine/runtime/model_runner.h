// ModelRunner: one model on one backend with its paged KV cache, driven step by
// step. It offers the two things the CLI and tests need from the engine core:
// teacher-forced scoring of a token sequence, and generation for a batch of
// requests of different lengths (prompts prefilled in chunks, then batched
// decode). The serving scheduler (continuous batching with admission and
// preemption) builds on the same pieces.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"
#include "engine/model/transformer.h"
#include "engine/runtime/kv_cache.h"
#include "engine/runtime/sampler.h"

namespace polar {

struct RunnerOptions {
  int32_t block_size = 16;
  int64_t num_kv_blocks = 0;         // 0: derive from kv_cache_bytes
  int64_t kv_cache_bytes = 1LL << 30;
  int32_t max_batch_tokens = 512;    // tokens per step (prefill chunks + decode tokens)
  int32_t threads = 0;               // 0: all cores
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams params;
};

enum class FinishReason { kLength, kStop };

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated, including a final stop token
  FinishReason finish_reason = FinishReason::kLength;
};

class ModelRunner {
 public:
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(Checkpoint checkpoint,
                                                             const RunnerOptions& options);
  const ModelConfig& config() const { return checkpoint_.config; }
  const Checkpoint& checkpoint() const { return checkpoint_; }
  const KvCacheLayout& kv_layout() const { return backend_->kv_layout(); }

  // Teacher-forced logits at every position of `tokens` (one sequence,
  // prefilled through the paged KV cache in chunks of `chunk` tokens):
  // [tokens.size(), vocab] row-major.
  absl::StatusOr<std::vector<float>> ScoreTokens(std::span<const int32_t> tokens, int32_t chunk = 64);

  // Called for each generated token: (request index, token id). Returning false
  // stops that request.
  using TokenCallback = std::function<bool(size_t, int32_t)>;
  // Generates for all requests together. `end_of_generation_ids` are the
  // tokenizer's EOS-like ids (ignored for a request with ignore_eos).
  absl::StatusOr<std::vector<GenerationResult>> Generate(std::span<const GenerationRequest> requests,
                                                         std::span<const int32_t> end_of_generation_ids,
                                                         const TokenCallback& on_token = nullptr);

 private:
  ModelRunner(Checkpoint checkpoint, const RunnerOptions& options)
      : checkpoint_(std::move(checkpoint)), options_(options) {}
  absl::Status Init();
  // Appends `count` tokens of `tokens` for sequence `kv` to the step; their KV
  // goes to positions kv.length() .. +count. Reserves the blocks.
  absl::Status AddToStep(SequenceKv& kv, std::span<const int32_t> tokens, bool want_logits);
  absl::Status RunStep(std::vector<float>& logits);

  Checkpoint checkpoint_;
  RunnerOptions options_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<TransformerModel> model_;
  std::unique_ptr<BlockAllocator> allocator_;
  StepBatch step_;
};

}  // namespace polar
