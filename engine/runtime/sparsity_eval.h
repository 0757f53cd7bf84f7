// What Polar Sparsity costs in quality, measured the way serving runs it:
// windows of a corpus are fed through the engine with a dense prompt
// (prefill) followed by teacher-forced decode steps, once dense and once at
// the density under test, side by side in the same batches (a sequence's
// result does not depend on its batch, so this changes nothing). Each decode
// step's next-token distribution is scored: perplexity of both runs, top-1
// agreement of the sparse run with the dense one and the mean KL divergence
// KL(dense || sparse). The heads actually computed come from the model's
// per-layer counters.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/head_sparsity.h"
#include "engine/runtime/model_runner.h"

namespace polar {

struct SparsityEvalOptions {
  int32_t window = 256;     // tokens per window (sequence)
  int32_t prompt = 32;      // its first tokens: a dense prompt, not scored
  int32_t batch = 16;       // windows run together (each twice: dense and sparse)
  int64_t max_windows = 0;  // 0: every whole window of the corpus
  float density = 1.0f;     // in (0, 1]
  HeadSelectionMode mode = HeadSelectionMode::kRouters;
  SelectionUnit unit = SelectionUnit::kKvGroup;
  uint64_t seed = 1;  // random selection
  std::function<void(int64_t windows_done, int64_t windows_total)> on_progress;
};

struct SparsityEvalResult {
  int64_t windows = 0;
  int64_t scored_tokens = 0;  // decode-step predictions scored
  double perplexity = 0;      // of the sparse run
  double dense_perplexity = 0;
  double top1_agreement = 0;  // fraction of predictions whose argmax equals the dense one's
  double mean_kl = 0;         // mean KL(dense || sparse), nats
  // Heads computed / heads in total over the decode tokens of the sparse
  // run, per layer and over all layers.
  std::vector<double> layer_density;
  double density = 0;
};

// Evaluates `runner` (its routers, if the mode needs them) on `tokens`. The
// runner's selection mode and unit are set for the run and restored after.
absl::StatusOr<SparsityEvalResult> EvaluateSparsity(ModelRunner& runner, std::span<const int32_t> tokens,
                                                    const SparsityEvalOptions& options);

}  // namespace polar
