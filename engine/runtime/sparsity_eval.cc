// See sparsity_eval.h.
#include "engine/runtime/sparsity_eval.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/runtime/kv_cache.h"

namespace polar {
namespace {

// log-softmax of one row into `out`.
void LogSoftmax(const float* logits, int64_t n, std::vector<double>& out) {
  out.resize(n);
  double max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = std::max(max, static_cast<double>(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  const double log_sum = max + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<double>(logits[i]) - log_sum;
}

int64_t ArgMax(const float* row, int64_t n) { return std::max_element(row, row + n) - row; }

// Restores the runner's selection mode and unit when the evaluation ends.
class ModeGuard {
 public:
  ModeGuard(HeadSparsity& heads, const SparsityEvalOptions& o) : heads_(heads) {
    heads_.SetMode(o.mode, o.seed);
    heads_.SetUnit(o.unit);
  }
  ~ModeGuard() {
    heads_.SetMode(HeadSelectionMode::kRouters, 0);
    heads_.SetUnit(SelectionUnit::kKvGroup);
  }

 private:
  HeadSparsity& heads_;
};

}  // namespace

absl::StatusOr<SparsityEvalResult> EvaluateSparsity(ModelRunner& runner, std::span<const int32_t> tokens,
                                                    const SparsityEvalOptions& o) {
  if (o.window < 3 || o.prompt < 1 || o.prompt > o.window - 2 || o.batch < 1) {
    return absl::InvalidArgumentError("evaluation needs window >= 3, 1 <= prompt <= window - 2, batch >= 1");
  }
  if (!(o.density > 0.0f && o.density <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("density ", o.density, " is not in (0, 1]"));
  }
  if (o.mode == HeadSelectionMode::kRouters && o.density < 1.0f && runner.heads().routers() == nullptr) {
    return absl::FailedPreconditionError("router selection needs head routers (--routers)");
  }
  if (o.window > runner.config().max_position_embeddings) {
    return absl::InvalidArgumentError("window longer than the model's context");
  }
  const int32_t vocab = static_cast<int32_t>(runner.config().vocab_size);
  for (int32_t t : tokens) {
    if (t < 0 || t >= vocab) return absl::InvalidArgumentError(absl::StrCat("token id ", t, " outside the vocabulary"));
  }
  int64_t windows = static_cast<int64_t>(tokens.size()) / o.window;
  if (o.max_windows > 0) windows = std::min(windows, o.max_windows);
  if (windows == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the corpus has ", tokens.size(), " tokens, less than one window of ", o.window));
  }
  ModeGuard guard(runner.heads(), o);
  const HeadCounters& counters = runner.heads().counters();
  const int64_t layers = counters.num_layers;
  const int64_t heads = runner.config().num_heads;
  std::vector<int64_t> active_before(layers);
  for (int64_t l = 0; l < layers; ++l) active_before[l] = counters.active[l].load();

  SparsityEvalResult result;
  double nll_sparse = 0, nll_dense = 0, kl = 0;
  int64_t agree = 0, all_tokens = 0;
  std::vector<float> logits;
  std::vector<double> log_dense, log_sparse;
  const int32_t budget = runner.options().max_batch_tokens;
  for (int64_t first = 0; first < windows; first += o.batch) {
    const int64_t count = std::min<int64_t>(o.batch, windows - first);
    // Sequence 2i is window i dense, 2i + 1 the same window sparse.
    std::vector<SequenceKv> kv;
    for (int64_t i = 0; i < 2 * count; ++i) kv.emplace_back(runner.kv_layout().block_size);
    auto window_tokens = [&](int64_t i) { return tokens.subspan((first + i / 2) * o.window, o.window); };
    auto density_of = [&](int64_t i) { return i % 2 == 0 ? 1.0f : o.density; };
    auto release = [&] {
      for (SequenceKv& k : kv) k.Release(runner.kv_allocator());
    };
    // Dense prompts, in steps within the token budget.
    for (int64_t i = 0; i < 2 * count;) {
      runner.ClearStep();
      int64_t used = 0;
      for (; i < 2 * count && (used == 0 || used + o.prompt <= budget); ++i, used += o.prompt) {
        absl::Status s = runner.AddToStep(kv[i], window_tokens(i).first(o.prompt), false, density_of(i));
        if (!s.ok()) {
          release();
          return s;
        }
      }
      if (absl::Status s = runner.RunStep(logits); !s.ok()) {
        release();
        return s;
      }
    }
    // Teacher-forced decode: feeding token t predicts token t + 1.
    for (int32_t t = o.prompt; t + 1 < o.window; ++t) {
      runner.ClearStep();
      for (int64_t i = 0; i < 2 * count; ++i) {
        if (absl::Status s = runner.AddToStep(kv[i], window_tokens(i).subspan(t, 1), true, density_of(i)); !s.ok()) {
          release();
          return s;
        }
      }
      if (absl::Status s = runner.RunStep(logits); !s.ok()) {
        release();
        return s;
      }
      for (int64_t w = 0; w < count; ++w) {
        const float* dense = logits.data() + (2 * w) * vocab;
        const float* sparse = logits.data() + (2 * w + 1) * vocab;
        const int32_t target = window_tokens(2 * w)[t + 1];
        LogSoftmax(dense, vocab, log_dense);
        LogSoftmax(sparse, vocab, log_sparse);
        nll_dense -= log_dense[target];
        nll_sparse -= log_sparse[target];
        double row_kl = 0;
        for (int32_t v = 0; v < vocab; ++v) row_kl += std::exp(log_dense[v]) * (log_dense[v] - log_sparse[v]);
        kl += row_kl;
        agree += ArgMax(dense, vocab) == ArgMax(sparse, vocab) ? 1 : 0;
        ++all_tokens;
      }
    }
    release();
    if (o.on_progress) o.on_progress(first + count, windows);
  }
  result.windows = windows;
  result.scored_tokens = all_tokens;
  result.perplexity = std::exp(nll_sparse / static_cast<double>(all_tokens));
  result.dense_perplexity = std::exp(nll_dense / static_cast<double>(all_tokens));
  result.top1_agreement = static_cast<double>(agree) / static_cast<double>(all_tokens);
  result.mean_kl = kl / static_cast<double>(all_tokens);
  // Heads computed by the sparse run's decode tokens: what the counters grew
  // by, less the dense run (every head of every token) and the sparse run's
  // prompts (dense too).
  const int64_t decode_tokens = windows * (o.window - 1 - o.prompt);
  const int64_t per_run_tokens = windows * (o.window - 1);
  const int64_t prompt_tokens = windows * o.prompt;
  double sum = 0;
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t grown = counters.active[l].load() - active_before[l];
    const int64_t sparse_decode_heads = grown - per_run_tokens * heads - prompt_tokens * heads;
    result.layer_density.push_back(static_cast<double>(sparse_decode_heads) /
                                   static_cast<double>(decode_tokens * heads));
    sum += result.layer_density.back();
  }
  result.density = sum / static_cast<double>(layers);
  return result;
}

}  // namespace polar
