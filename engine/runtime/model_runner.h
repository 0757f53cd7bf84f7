// ModelRunner: one model on one backend with its paged KV cache, driven step by
// step. It offers:
//   - the step executor the scheduler (engine/runtime/scheduler.h) packs and
//     runs batches with: the block pool, AddToStep, RunStep;
//   - teacher-forced scoring of a token sequence (ScoreTokens);
//   - Generate: a synchronous run of a set of requests through the same
//     continuous-batching code the serving scheduler uses (StepScheduler), so
//     the CLI, the benchmarks and the server share one way to pack steps,
//     admit, preempt and sample.
// A ModelRunner is not thread-safe: one thread at a time drives it (the
// Scheduler's engine thread while that runs).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
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
  int32_t max_num_seqs = 256;        // sequences per step (running cap) for Generate
  int32_t threads = 0;               // 0: all cores
  // Polar Sparsity head routers (polar calibrate's output); empty: none, and
  // every sequence is dense.
  std::string head_routers;
  // Polar Sparsity MLP routers (`polar calibrate --mlp`; ReLU models only);
  // empty: none, and every MLP is dense. A step's MLP is sparse only when
  // all its sequences decode at a density below 1 (mlp_sparsity.h).
  std::string mlp_routers;
  // The density of requests that ask for the default, in (0, 1]; 0: the
  // routers' calibrated one (1 without routers).
  float default_density = 0.0f;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams params;
  float density = 0.0f;  // as SequenceRequest::density (0: the default)
};

// Why a sequence ended. kError carries a status alongside (TokenEvent).
enum class FinishReason { kLength, kStop, kCancelled, kDeadline, kError };
const char* FinishReasonName(FinishReason reason);  // "length", "stop", ...

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
  const RunnerOptions& options() const { return options_; }

  // Teacher-forced logits at every position of `tokens` (one sequence,
  // prefilled through the paged KV cache in chunks of `chunk` tokens):
  // [tokens.size(), vocab] row-major.
  absl::StatusOr<std::vector<float>> ScoreTokens(std::span<const int32_t> tokens, int32_t chunk = 64);

  // Called for each generated token: (request index, token id). Returning false
  // cancels that request (finish reason kCancelled).
  using TokenCallback = std::function<bool(size_t, int32_t)>;
  // Generates for all requests together with continuous batching (at most
  // options.max_num_seqs running, options.max_batch_tokens per step, preemption
  // by recompute when the KV pool runs short). `end_of_generation_ids` are the
  // tokenizer's EOS-like ids (ignored for a request with ignore_eos). The first
  // invalid request or failed sequence makes the whole call an error.
  absl::StatusOr<std::vector<GenerationResult>> Generate(std::span<const GenerationRequest> requests,
                                                         std::span<const int32_t> end_of_generation_ids,
                                                         const TokenCallback& on_token = nullptr);

  // ---- step executor (the scheduler's) ----
  BlockAllocator& kv_allocator() { return *allocator_; }
  const BlockAllocator& kv_allocator() const { return *allocator_; }
  // Starts packing a new step.
  void ClearStep() { step_.Clear(); }
  // Appends `tokens` of the sequence `kv` to the step; their KV goes to
  // positions kv.length() .. +tokens.size(). Reserves blocks if the caller
  // has not (RESOURCE_EXHAUSTED when the pool is short; nothing changes then).
  // `density` in (0, 1]: the fraction of KV groups a decode token of this
  // sequence attends with (prefill chunks are dense whatever it is).
  absl::Status AddToStep(SequenceKv& kv, std::span<const int32_t> tokens, bool want_logits, float density);
  const StepBatch& step() const { return step_; }
  // Runs the packed step: logits of its logit rows, [rows, vocab].
  absl::Status RunStep(std::vector<float>& logits);
  // ---- Polar Sparsity ----
  // The model's attention heads (routers, selection mode, per-layer counters).
  HeadSparsity& heads() { return model_->heads(); }
  const HeadSparsity& heads() const { return model_->heads(); }
  // The model's MLP neurons (routers, counters); null for non-ReLU models.
  MlpSparsity* mlp() { return model_->mlp(); }
  const MlpSparsity* mlp() const { return model_->mlp(); }
  // The calibrated default density of the loaded routers; 1 without routers.
  float default_density() const;
  // A request's density: 0 means the default; otherwise it must be in (0, 1],
  // and below 1 only with head or MLP routers loaded (FAILED_PRECONDITION
  // otherwise).
  absl::StatusOr<float> ResolveDensity(float requested) const;

  // Applies options.threads to the calling thread (OpenMP's thread count is
  // per thread; the engine thread calls this before its first step).
  void BindThreadCount() const;

 private:
  ModelRunner(Checkpoint checkpoint, const RunnerOptions& options)
      : checkpoint_(std::move(checkpoint)), options_(options) {}
  absl::Status Init();

  Checkpoint checkpoint_;
  RunnerOptions options_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<TransformerModel> model_;
  std::unique_ptr<BlockAllocator> allocator_;
  StepBatch step_;
};

}  // namespace polar
