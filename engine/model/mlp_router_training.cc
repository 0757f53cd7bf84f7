// See mlp_router_training.h.
//
// Optimisation runs on standardised inputs z = (x - mean) * inv_std (the
// training split's per-feature statistics; normed hidden states times a
// learned gain have feature scales orders of magnitude apart, and Adam
// moves every weight by about the same step). The standardisation is folded
// into down and bias before anything is evaluated or returned, so recall is
// always measured on raw inputs with the weights serving uses.
//
// Gradients of scores = up · (down · z) + bias for a minibatch Z [b, d],
// U = Z · downᵀ [b, r], G = dLoss/dscores [b, ffn]:
//   d bias = column sums of G, d up = Gᵀ · U, d down = (G · up)ᵀ · Z,
// each product one kernels::cpu::Linear call on transposed copies.
#include "engine/model/mlp_router_training.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/model/router_optimizer.h"
#include "kernels/cpu/gather_mlp.h"
#include "kernels/cpu/gemm.h"

namespace polar {
namespace {

// The paper's negative weight: the fraction of positives plus this.
constexpr double kNegativeWeightOffset = 0.005;

absl::Status CheckSamples(const MlpRouterSamples& s) {
  if (s.num_samples < 2 || s.input_dim <= 0 || s.num_neurons <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("MLP router samples: ", s.num_samples, " samples of ", s.input_dim,
                                                   " inputs and ", s.num_neurons,
                                                   " neurons; need >= 2 samples and positive sizes"));
  }
  if (static_cast<int64_t>(s.inputs.size()) != s.num_samples * s.input_dim ||
      static_cast<int64_t>(s.active.size()) != s.num_samples * s.num_neurons) {
    return absl::InvalidArgumentError(absl::StrCat("MLP router samples: ", s.inputs.size(), " inputs and ",
                                                   s.active.size(), " labels for ", s.num_samples, " samples"));
  }
  if (!std::all_of(s.inputs.begin(), s.inputs.end(), [](float x) { return std::isfinite(x); })) {
    return absl::InvalidArgumentError("MLP router samples: an input is not finite");
  }
  return absl::OkStatus();
}

absl::Status CheckOptions(const MlpRouterTrainingOptions& o) {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError("MLP router training: " + what); };
  if (o.rank < 1) return bad(absl::StrCat("rank ", o.rank, " < 1"));
  if (o.max_epochs < 1) return bad(absl::StrCat("max_epochs ", o.max_epochs, " < 1"));
  if (o.batch_size < 1) return bad(absl::StrCat("batch_size ", o.batch_size, " < 1"));
  if (!(o.learning_rate > 0.0f && std::isfinite(o.learning_rate))) return bad("learning_rate must be positive");
  if (!(o.weight_decay >= 0.0f && std::isfinite(o.weight_decay))) return bad("weight_decay must be >= 0");
  if (!(o.validation_fraction > 0.0f && o.validation_fraction < 1.0f)) return bad("validation_fraction not in (0, 1)");
  if (o.patience < 1) return bad(absl::StrCat("patience ", o.patience, " < 1"));
  return absl::OkStatus();
}

// [rows, cols] -> [cols, rows].
void Transpose(const float* a, int64_t rows, int64_t cols, std::vector<float>& out) {
  out.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[c * rows + r] = a[r * cols + c];
  }
}

// Uniform in [0, 1) from 53 random bits: the same on every standard library
// (std::uniform_real_distribution's algorithm is not fixed).
double Uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Indices of the top-n of values[0, count) (any order), ranked by value
// descending, ties to the lower index: serving's order.
void TopN(const float* values, int64_t count, int64_t n, std::vector<int32_t>& order) {
  order.resize(count);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
}

// Mean over samples [begin, end) with an active neuron of the fraction of
// their active neurons among the top-|active| scores; 1 if none is active.
double SampleRecall(const MlpRouterSamples& s, const TrainedMlpRouter& router, int64_t begin, int64_t end) {
  const int64_t f = s.num_neurons;
  const std::vector<float> scores = MlpRouterScores(s, router, begin, end);
  std::vector<int32_t> order;
  double sum = 0;
  int64_t counted = 0;
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* y = s.active.data() + i * f;
    const int64_t positives = std::count(y, y + f, uint8_t{1});
    if (positives == 0) continue;
    TopN(scores.data() + (i - begin) * f, f, positives, order);
    int64_t hits = 0;
    for (int64_t j = 0; j < positives; ++j) hits += y[order[j]];
    sum += static_cast<double>(hits) / static_cast<double>(positives);
    ++counted;
  }
  return counted == 0 ? 1.0 : sum / static_cast<double>(counted);
}

// The batches of `b` as lists of sample indices.
std::vector<std::vector<int64_t>> DrawBatches(const UnionBatches& b) {
  std::mt19937_64 rng(b.seed);
  std::vector<int64_t> pool(b.end - b.begin);
  const int64_t size = std::min<int64_t>(b.batch_size, static_cast<int64_t>(pool.size()));
  std::vector<std::vector<int64_t>> batches(b.num_batches);
  for (std::vector<int64_t>& batch : batches) {
    std::iota(pool.begin(), pool.end(), b.begin);
    // The first `size` steps of a Fisher-Yates from the front.
    for (int64_t i = 0; i < size; ++i) {
      std::swap(pool[i], pool[i + DrawBelow(rng, static_cast<int64_t>(pool.size()) - i)]);
    }
    batch.assign(pool.begin(), pool.begin() + size);
  }
  return batches;
}

absl::Status CheckRecallArgs(const MlpRouterSamples& s, const TrainedMlpRouter& r, const UnionBatches& b) {
  if (absl::Status st = CheckSamples(s); !st.ok()) return st;
  if (r.rank < 1 || static_cast<int64_t>(r.down.size()) != r.rank * s.input_dim ||
      static_cast<int64_t>(r.up.size()) != s.num_neurons * r.rank ||
      static_cast<int64_t>(r.bias.size()) != s.num_neurons) {
    return absl::InvalidArgumentError("union recall: the router does not fit the samples");
  }
  if (b.begin < 0 || b.begin >= b.end || b.end > s.num_samples || b.batch_size < 1 || b.num_batches < 1) {
    return absl::InvalidArgumentError(absl::StrCat("union recall: samples [", b.begin, ", ", b.end, ") of ",
                                                   s.num_samples, ", ", b.num_batches, " batches of ", b.batch_size));
  }
  return absl::OkStatus();
}

// Per batch: the union of its active neurons ([num_neurons] 0/1, and its
// size) and its scores' rows gathered in batch order ([size, num_neurons]).
struct BatchView {
  std::vector<uint8_t> in_union;
  int64_t union_size = 0;
  std::vector<float> rows;
};

BatchView ViewBatch(const MlpRouterSamples& s, const std::vector<float>& scores, int64_t begin,
                    const std::vector<int64_t>& batch) {
  const int64_t f = s.num_neurons;
  BatchView v{std::vector<uint8_t>(f, 0), 0, std::vector<float>(batch.size() * f)};
  for (size_t i = 0; i < batch.size(); ++i) {
    const uint8_t* y = s.active.data() + batch[i] * f;
    for (int64_t n = 0; n < f; ++n) v.in_union[n] |= y[n];
    std::copy_n(scores.data() + (batch[i] - begin) * f, f, v.rows.data() + i * f);
  }
  v.union_size = std::count(v.in_union.begin(), v.in_union.end(), uint8_t{1});
  return v;
}

}  // namespace

std::vector<float> MlpRouterScores(const MlpRouterSamples& s, const TrainedMlpRouter& router, int64_t begin,
                                   int64_t end) {
  const int64_t rows = end - begin;
  std::vector<float> low(rows * router.rank), scores(rows * s.num_neurons);
  kernels::cpu::Linear(s.inputs.data() + begin * s.input_dim, router.down.data(), nullptr, rows, s.input_dim,
                       router.rank, low.data());
  kernels::cpu::Linear(low.data(), router.up.data(), router.bias.data(), rows, router.rank, s.num_neurons,
                       scores.data());
  return scores;
}

absl::StatusOr<TrainedMlpRouter> TrainMlpRouter(const MlpRouterSamples& samples,
                                                const MlpRouterTrainingOptions& options) {
  if (absl::Status s = CheckSamples(samples); !s.ok()) return s;
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  const int64_t n = samples.num_samples, d = samples.input_dim, f = samples.num_neurons;
  const int64_t r = std::min({options.rank, d, f});
  // The held-out split is the tail: neighbouring tokens of a document are
  // near copies, so an interleaved split would score on trained text.
  const int64_t n_val =
      std::clamp<int64_t>(std::llround(options.validation_fraction * static_cast<double>(n)), 1, n - 1);
  const int64_t n_train = n - n_val;

  // Statistics of the training split only (see the top of this file).
  const FeatureStandardisation st = StandardiseFeatures(samples.inputs.data(), n_train, d);

  // Label statistics: each neuron's prior (the bias starts at its logit) and
  // the negatives' weight.
  std::vector<int64_t> positives(f, 0);
  for (int64_t i = 0; i < n_train; ++i) {
    for (int64_t j = 0; j < f; ++j) positives[j] += samples.active[i * f + j];
  }
  const int64_t all_positives = std::accumulate(positives.begin(), positives.end(), int64_t{0});
  const float negative_weight = static_cast<float>(std::min(
      1.0, static_cast<double>(all_positives) / static_cast<double>(n_train * f) + kNegativeWeightOffset));

  std::mt19937_64 rng(options.seed);
  std::vector<float> down(r * d), up(f * r, 0.0f), bias(f);  // standardised space
  // down ~ U(-a, a) with variance 1/d: each inner unit starts at unit scale.
  const double a = std::sqrt(3.0 / static_cast<double>(d));
  for (float& w : down) w = static_cast<float>((2.0 * Uniform(rng) - 1.0) * a);
  for (int64_t j = 0; j < f; ++j) {
    const double p = std::clamp(static_cast<double>(positives[j]) / static_cast<double>(n_train), 1e-3, 1.0 - 1e-3);
    bias[j] = static_cast<float>(std::log(p / (1.0 - p)));
  }
  AdamW down_opt(down.size()), up_opt(up.size()), bias_opt(bias.size());

  const int64_t batch = std::min<int64_t>(options.batch_size, n_train);
  std::vector<float> z(batch * d), zt, low(batch * r), lowt, scores(batch * f), grad(batch * f), gradt;
  std::vector<float> up_t, grad_low(batch * r), grad_lowt;
  std::vector<float> grad_down(r * d), grad_up(f * r), grad_bias(f);
  std::vector<int64_t> order(n_train);
  std::iota(order.begin(), order.end(), 0);

  TrainedMlpRouter folded, best;
  folded.rank = r;
  best.validation_begin = n_train;
  double best_recall = -1.0;
  int32_t since_best = 0;
  int64_t step = 0;
  for (int32_t epoch = 1; epoch <= options.max_epochs; ++epoch) {
    SeededShuffle(order, rng);
    double loss_sum = 0;
    for (int64_t start = 0; start < n_train; start += batch) {
      const int64_t rows = std::min(batch, n_train - start);
      st.Apply(samples.inputs.data(), order.data() + start, rows, z.data());
      kernels::cpu::Linear(z.data(), down.data(), nullptr, rows, d, r, low.data());
      kernels::cpu::Linear(low.data(), up.data(), bias.data(), rows, r, f, scores.data());
      // Weighted BCE on sigmoid(score), mean over the batch's elements, in
      // the stable form max(s, 0) - s*y + log(1 + exp(-|s|)).
      const float scale = 1.0f / static_cast<float>(rows * f);
      std::fill(grad_bias.begin(), grad_bias.end(), 0.0f);
      for (int64_t i = 0; i < rows; ++i) {
        const uint8_t* y = samples.active.data() + order[start + i] * f;
        for (int64_t j = 0; j < f; ++j) {
          const float s = scores[i * f + j];
          const float label = y[j] != 0 ? 1.0f : 0.0f;
          const float w = y[j] != 0 ? 1.0f : negative_weight;
          loss_sum += w * (std::max(s, 0.0f) - s * label + std::log1p(std::exp(-std::abs(s))));
          const float g = w * (1.0f / (1.0f + std::exp(-s)) - label) * scale;
          grad[i * f + j] = g;
          grad_bias[j] += g;
        }
      }
      // d up = Gᵀ · U: Linear(x = Gᵀ [f, rows], w = Uᵀ [r, rows]).
      Transpose(grad.data(), rows, f, gradt);
      Transpose(low.data(), rows, r, lowt);
      kernels::cpu::Linear(gradt.data(), lowt.data(), nullptr, f, rows, r, grad_up.data());
      // d U = G · up: Linear(x = G [rows, f], w = upᵀ [r, f]).
      Transpose(up.data(), f, r, up_t);
      kernels::cpu::Linear(grad.data(), up_t.data(), nullptr, rows, f, r, grad_low.data());
      // d down = (dU)ᵀ · Z: Linear(x = dUᵀ [r, rows], w = Zᵀ [d, rows]).
      Transpose(grad_low.data(), rows, r, grad_lowt);
      Transpose(z.data(), rows, d, zt);
      kernels::cpu::Linear(grad_lowt.data(), zt.data(), nullptr, r, rows, d, grad_down.data());
      ++step;
      down_opt.Update(down, grad_down, options.learning_rate, options.weight_decay, step);
      up_opt.Update(up, grad_up, options.learning_rate, options.weight_decay, step);
      bias_opt.Update(bias, grad_bias, options.learning_rate, 0.0, step);  // a neuron's prior: no decay
    }

    // Fold: down' = down * inv_std (per column), bias' = bias - up · (down' · mean).
    folded.down.resize(r * d);
    folded.up = up;
    folded.bias.resize(f);
    std::vector<double> shift(r, 0.0);
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t k = 0; k < d; ++k) {
        const double w = static_cast<double>(down[i * d + k]) * st.inv_std[k];
        folded.down[i * d + k] = static_cast<float>(w);
        shift[i] += w * st.mean[k];
      }
    }
    for (int64_t j = 0; j < f; ++j) {
      double s = 0;
      for (int64_t i = 0; i < r; ++i) s += static_cast<double>(up[j * r + i]) * shift[i];
      folded.bias[j] = static_cast<float>(bias[j] - s);
    }
    const double recall = SampleRecall(samples, folded, n_train, n);
    if (options.on_epoch) options.on_epoch(epoch, loss_sum / static_cast<double>(n_train * f), recall);
    best.epochs_run = epoch;
    if (recall > best_recall) {
      best_recall = recall;
      best.rank = r;
      best.down = folded.down;
      best.up = folded.up;
      best.bias = folded.bias;
      best.validation_recall = recall;
      best.best_epoch = epoch;
      since_best = 0;
    } else if (++since_best >= options.patience) {
      break;
    }
  }
  return best;
}

absl::StatusOr<std::vector<double>> UnionRecallByK(const MlpRouterSamples& samples, const TrainedMlpRouter& router,
                                                   const UnionBatches& batches) {
  if (absl::Status s = CheckRecallArgs(samples, router, batches); !s.ok()) return s;
  const int64_t f = samples.num_neurons;
  const std::vector<float> scores = MlpRouterScores(samples, router, batches.begin, batches.end);
  std::vector<double> recall(f + 1, 0.0);
  std::vector<float> sum(f);
  std::vector<int32_t> order;
  std::vector<double> hits_at(f + 1);
  for (const std::vector<int64_t>& batch : DrawBatches(batches)) {
    const BatchView v = ViewBatch(samples, scores, batches.begin, batch);
    if (v.union_size == 0) {
      for (double& r : recall) r += 1.0;
      continue;
    }
    // Column sums of ReLU(scores) in row order, as SelectMlpNeurons sums.
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (size_t i = 0; i < batch.size(); ++i) {
      const float* row = v.rows.data() + i * f;
      for (int64_t n = 0; n < f; ++n) sum[n] += row[n] > 0.0f ? row[n] : 0.0f;
    }
    TopN(sum.data(), f, f, order);
    int64_t hits = 0;
    for (int64_t k = 1; k <= f; ++k) {
      hits += v.in_union[order[k - 1]];
      recall[k] += static_cast<double>(hits) / static_cast<double>(v.union_size);
    }
  }
  for (double& r : recall) r /= static_cast<double>(batches.num_batches);
  return recall;
}

absl::StatusOr<double> UnionRecallAt(const MlpRouterSamples& samples, const TrainedMlpRouter& router, int64_t k,
                                     const UnionBatches& batches) {
  if (absl::Status s = CheckRecallArgs(samples, router, batches); !s.ok()) return s;
  const int64_t f = samples.num_neurons;
  if (k < 0 || k > f) return absl::InvalidArgumentError(absl::StrCat("union recall: k ", k, " not in [0, ", f, "]"));
  const std::vector<float> scores = MlpRouterScores(samples, router, batches.begin, batches.end);
  std::vector<int32_t> picked(f);
  double sum = 0;
  for (const std::vector<int64_t>& batch : DrawBatches(batches)) {
    const BatchView v = ViewBatch(samples, scores, batches.begin, batch);
    if (v.union_size == 0) {
      sum += 1.0;
      continue;
    }
    const int64_t n = kernels::cpu::SelectMlpNeurons(v.rows.data(), static_cast<int64_t>(batch.size()), f, k,
                                                     picked.data());
    int64_t hits = 0;
    for (int64_t i = 0; i < n; ++i) hits += v.in_union[picked[i]];
    sum += static_cast<double>(hits) / static_cast<double>(v.union_size);
  }
  return sum / static_cast<double>(batches.num_batches);
}

}  // namespace polar
