// See router_training.h.
//
// Optimisation runs on standardised features z = (x - mean) * inv_std (the
// training split's per-feature mean and deviation): the router input is a
// normed hidden state times a learned gain, so feature scales and offsets
// differ by orders of magnitude; Adam moves every weight by about the same
// step, so without standardising the large features would swing the logits
// while the small ones barely move them. The engine applies W · x + b to the
// raw input, so the standardisation is folded into the weights
// (FoldStandardisation) before anything is evaluated or returned: validation
// recall is always measured with the folded weights on raw inputs, exactly
// what serving computes.
//
// Reproducibility: the forward passes use kernels::cpu::Linear (one fixed
// summation order per output, whatever the thread count); everything else
// runs on one thread in a fixed order; the shuffle is our own Fisher-Yates on
// std::mt19937_64 (router_optimizer.h: std::shuffle's algorithm differs
// between libraries).
#include "engine/model/router_training.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/model/router_optimizer.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/head_select.h"

namespace polar {
namespace {

absl::Status CheckShapes(const RouterSamples& s) {
  if (s.num_samples <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("router samples: none (num_samples = ", s.num_samples, ")"));
  }
  if (s.input_dim <= 0 || s.num_heads <= 0 || s.num_groups <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("router samples: input_dim ", s.input_dim, ", num_heads ",
                                                   s.num_heads, ", num_groups ", s.num_groups,
                                                   " must all be positive"));
  }
  if (s.num_heads % s.num_groups != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("router samples: ", s.num_groups, " groups do not divide ", s.num_heads, " heads"));
  }
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (s.input_dim > kMax / s.num_samples || s.num_heads > kMax / s.num_samples) {
    return absl::InvalidArgumentError("router samples: sizes overflow");
  }
  if (static_cast<int64_t>(s.inputs.size()) != s.num_samples * s.input_dim) {
    return absl::InvalidArgumentError(absl::StrCat("router samples: inputs hold ", s.inputs.size(),
                                                   " floats, expected ", s.num_samples, " x ", s.input_dim));
  }
  if (static_cast<int64_t>(s.head_norms.size()) != s.num_samples * s.num_heads) {
    return absl::InvalidArgumentError(absl::StrCat("router samples: head_norms hold ", s.head_norms.size(),
                                                   " floats, expected ", s.num_samples, " x ", s.num_heads));
  }
  return absl::OkStatus();
}

absl::Status CheckFinite(const RouterSamples& s) {
  auto first_bad = [](const std::vector<float>& v) {
    return std::find_if(v.begin(), v.end(), [](float x) { return !std::isfinite(x); }) - v.begin();
  };
  if (const int64_t i = first_bad(s.inputs); i < static_cast<int64_t>(s.inputs.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("router samples: input of sample ", i / s.input_dim, " is not finite"));
  }
  if (const int64_t i = first_bad(s.head_norms); i < static_cast<int64_t>(s.head_norms.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("router samples: head norm of sample ", i / s.num_heads, " is not finite"));
  }
  return absl::OkStatus();
}

absl::Status CheckOptions(const RouterTrainingOptions& o) {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError("router training: " + what); };
  if (!(o.positive_fraction > 0.0f && o.positive_fraction <= 1.0f)) {
    return bad(absl::StrCat("positive_fraction ", o.positive_fraction, " not in (0, 1]"));
  }
  if (o.max_epochs < 1) return bad(absl::StrCat("max_epochs ", o.max_epochs, " < 1"));
  if (o.batch_size < 1) return bad(absl::StrCat("batch_size ", o.batch_size, " < 1"));
  if (!(o.learning_rate > 0.0f && std::isfinite(o.learning_rate))) {
    return bad(absl::StrCat("learning_rate ", o.learning_rate, " must be positive"));
  }
  if (!(o.weight_decay >= 0.0f && std::isfinite(o.weight_decay))) {
    return bad(absl::StrCat("weight_decay ", o.weight_decay, " must be >= 0"));
  }
  if (!(o.validation_fraction > 0.0f && o.validation_fraction < 1.0f)) {
    return bad(absl::StrCat("validation_fraction ", o.validation_fraction, " not in (0, 1)"));
  }
  if (o.patience < 1) return bad(absl::StrCat("patience ", o.patience, " < 1"));
  if (!(o.stop_recall > 0.0f && o.stop_recall <= 1.0f)) {
    return bad(absl::StrCat("stop_recall ", o.stop_recall, " not in (0, 1]"));
  }
  return absl::OkStatus();
}

// Heads labelled positive per sample: ceil(f * heads), in [1, heads] (the
// small slack keeps 0.5 * 8 from rounding up to 5 through float error).
int64_t PositiveHeads(float fraction, int64_t num_heads) {
  const double k = std::ceil(static_cast<double>(fraction) * static_cast<double>(num_heads) - 1e-6);
  return std::clamp<int64_t>(static_cast<int64_t>(k), 1, num_heads);
}

// The indices of the k largest of values[0, n) into top (unordered), ties to
// the lower index, NaN last: the order SelectHeadGroups uses at serving.
void TopK(const float* values, int64_t n, int64_t k, std::vector<int32_t>& order) {
  order.resize(n);
  std::iota(order.begin(), order.end(), 0);
  auto key = [&](int32_t i) { return std::isnan(values[i]) ? -std::numeric_limits<float>::infinity() : values[i]; };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    const float ka = key(a), kb = key(b);
    return ka > kb || (ka == kb && a < b);
  });
}

// Per sample, 1 for its top-k heads by norm, else 0. [num_samples, num_heads]
std::vector<float> HeadLabels(const RouterSamples& s, int64_t positives) {
  std::vector<float> labels(s.num_samples * s.num_heads, 0.0f);
  std::vector<int32_t> order;
  for (int64_t i = 0; i < s.num_samples; ++i) {
    TopK(s.head_norms.data() + i * s.num_heads, s.num_heads, positives, order);
    for (int64_t j = 0; j < positives; ++j) labels[i * s.num_heads + order[j]] = 1.0f;
  }
  return labels;
}

// Router logits of samples [begin, end): [end - begin, num_heads].
std::vector<float> Logits(const RouterSamples& s, const std::vector<float>& weight, const std::vector<float>& bias,
                          int64_t begin, int64_t end) {
  std::vector<float> logits((end - begin) * s.num_heads);
  kernels::cpu::Linear(s.inputs.data() + begin * s.input_dim, weight.data(), bias.data(), end - begin, s.input_dim,
                       s.num_heads, logits.data());
  return logits;
}

// Mean over samples [begin, end) of the fraction of each sample's positive
// heads among the router's top-|positives| heads.
double HeadRecall(const RouterSamples& s, const std::vector<float>& labels, int64_t positives,
                  const std::vector<float>& weight, const std::vector<float>& bias, int64_t begin, int64_t end) {
  const std::vector<float> logits = Logits(s, weight, bias, begin, end);
  std::vector<int32_t> order;
  double sum = 0;
  for (int64_t i = begin; i < end; ++i) {
    TopK(logits.data() + (i - begin) * s.num_heads, s.num_heads, positives, order);
    int64_t hits = 0;
    for (int64_t j = 0; j < positives; ++j) hits += labels[i * s.num_heads + order[j]] != 0.0f;
    sum += static_cast<double>(hits) / static_cast<double>(positives);
  }
  return sum / static_cast<double>(end - begin);
}

// W z + b with z = (x - mean) * inv_std equals W' x + b' with
// W' = W * inv_std (per column) and b' = b - W' · mean.
void FoldStandardisation(const FeatureStandardisation& st, const std::vector<float>& weight,
                         const std::vector<float>& bias, int64_t num_heads, int64_t d, std::vector<float>& raw_weight,
                         std::vector<float>& raw_bias) {
  raw_weight.resize(num_heads * d);
  raw_bias.resize(num_heads);
  for (int64_t h = 0; h < num_heads; ++h) {
    double shift = 0;
    for (int64_t k = 0; k < d; ++k) {
      const double w = static_cast<double>(weight[h * d + k]) * st.inv_std[k];
      raw_weight[h * d + k] = static_cast<float>(w);
      shift += w * st.mean[k];
    }
    raw_bias[h] = static_cast<float>(bias[h] - shift);
  }
}

}  // namespace

absl::StatusOr<TrainedRouter> TrainHeadRouter(const RouterSamples& samples, const RouterTrainingOptions& options) {
  if (absl::Status s = CheckShapes(samples); !s.ok()) return s;
  if (absl::Status s = CheckFinite(samples); !s.ok()) return s;
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  const int64_t n = samples.num_samples, d = samples.input_dim, heads = samples.num_heads;
  if (n < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("router training: ", n, " sample(s); at least 2 are needed to hold one out for validation"));
  }
  // The validation split is the tail in collection order: calibration records
  // whole documents token by token, and neighbouring tokens are near copies,
  // so an interleaved split would score the router on text it trained on.
  const int64_t n_val =
      std::clamp<int64_t>(std::llround(options.validation_fraction * static_cast<double>(n)), 1, n - 1);
  const int64_t n_train = n - n_val;

  const int64_t positives = PositiveHeads(options.positive_fraction, heads);
  const std::vector<float> labels = HeadLabels(samples, positives);
  // The paper's weighting: positives 1, negatives the fraction of positives.
  const float negative_weight = static_cast<float>(positives) / static_cast<float>(heads);
  const FeatureStandardisation st = StandardiseFeatures(samples.inputs.data(), n_train, d);

  // Parameters in standardised space, and their folded (raw-input) form.
  std::vector<float> weight(heads * d, 0.0f), bias(heads, 0.0f);  // [heads, d], [heads]
  std::vector<float> raw_weight, raw_bias;
  AdamW weight_opt(weight.size()), bias_opt(bias.size());

  const int64_t batch = std::min<int64_t>(options.batch_size, n_train);
  std::vector<float> z(batch * d);                // [batch, d] standardised inputs
  std::vector<float> logits(batch * heads);       // [batch, heads]
  std::vector<float> grad_logits(batch * heads);  // [batch, heads] dLoss/dlogit
  std::vector<float> grad_weight(heads * d), grad_bias(heads);
  std::vector<int64_t> order(n_train);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(options.seed);

  TrainedRouter best;
  best.validation_begin = n_train;
  double best_recall = -1.0;
  int32_t epochs_since_best = 0;
  int64_t step = 0;
  for (int32_t epoch = 1; epoch <= options.max_epochs; ++epoch) {
    SeededShuffle(order, rng);
    double loss_sum = 0;
    for (int64_t start = 0; start < n_train; start += batch) {
      const int64_t rows = std::min(batch, n_train - start);
      st.Apply(samples.inputs.data(), order.data() + start, rows, z.data());
      kernels::cpu::Linear(z.data(), weight.data(), bias.data(), rows, d, heads, logits.data());

      // Weighted BCE on sigmoid(logit), mean over the batch's elements; in
      // the stable form max(l, 0) - l*y + log(1 + exp(-|l|)).
      const float scale = 1.0f / static_cast<float>(rows * heads);
      for (int64_t r = 0; r < rows; ++r) {
        const float* y = labels.data() + order[start + r] * heads;
        for (int64_t h = 0; h < heads; ++h) {
          const float l = logits[r * heads + h];
          const float w = y[h] != 0.0f ? 1.0f : negative_weight;
          loss_sum += w * (std::max(l, 0.0f) - l * y[h] + std::log1p(std::exp(-std::abs(l))));
          const float p = 1.0f / (1.0f + std::exp(-l));
          grad_logits[r * heads + h] = w * (p - y[h]) * scale;
        }
      }
      // grad_weight = grad_logitsᵀ · z, summed over rows in order.
      std::fill(grad_weight.begin(), grad_weight.end(), 0.0f);
      std::fill(grad_bias.begin(), grad_bias.end(), 0.0f);
      for (int64_t r = 0; r < rows; ++r) {
        const float* zr = z.data() + r * d;
        for (int64_t h = 0; h < heads; ++h) {
          const float g = grad_logits[r * heads + h];
          float* gw = grad_weight.data() + h * d;
          // omp simd: -O2 leaves this loop scalar (possible aliasing); lanes
          // are independent elements, so no sum is reordered.
#pragma omp simd
          for (int64_t k = 0; k < d; ++k) gw[k] += g * zr[k];
          grad_bias[h] += g;
        }
      }
      ++step;
      // No decay on the bias: it is each head's prior, not a capacity to limit.
      weight_opt.Update(weight, grad_weight, options.learning_rate, options.weight_decay, step);
      bias_opt.Update(bias, grad_bias, options.learning_rate, 0.0, step);
    }

    FoldStandardisation(st, weight, bias, heads, d, raw_weight, raw_bias);
    const double recall = HeadRecall(samples, labels, positives, raw_weight, raw_bias, n_train, n);
    if (options.on_epoch) options.on_epoch(epoch, loss_sum / static_cast<double>(n_train * heads), recall);
    best.epochs_run = epoch;
    if (recall > best_recall) {
      best_recall = recall;
      best.weight = raw_weight;
      best.bias = raw_bias;
      best.validation_recall = recall;
      best.best_epoch = epoch;
      epochs_since_best = 0;
    } else {
      ++epochs_since_best;
    }
    if (best_recall >= options.stop_recall || epochs_since_best >= options.patience) break;
  }
  return best;
}

absl::StatusOr<double> GroupRecall(const RouterSamples& samples, const std::vector<float>& weight,
                                   const std::vector<float>& bias, int32_t groups_kept, GroupScore reduce,
                                   int64_t begin, int64_t end) {
  if (absl::Status s = CheckShapes(samples); !s.ok()) return s;
  const int64_t heads = samples.num_heads, groups = samples.num_groups;
  if (static_cast<int64_t>(weight.size()) != heads * samples.input_dim || static_cast<int64_t>(bias.size()) != heads) {
    return absl::InvalidArgumentError(absl::StrCat("group recall: router of ", weight.size(), " weights and ",
                                                   bias.size(), " biases, expected ", heads, " x ", samples.input_dim,
                                                   " and ", heads));
  }
  if (groups_kept < 1 || groups_kept > groups) {
    return absl::InvalidArgumentError(
        absl::StrCat("group recall: groups_kept ", groups_kept, " not in [1, ", groups, "]"));
  }
  if (begin < 0 || begin >= end || end > samples.num_samples) {
    return absl::InvalidArgumentError(absl::StrCat("group recall: sample range [", begin, ", ", end,
                                                   ") is empty or outside [0, ", samples.num_samples, ")"));
  }
  const std::vector<float> logits = Logits(samples, weight, bias, begin, end);
  const int64_t per_group = heads / groups;
  const auto kernel_reduce =
      reduce == GroupScore::kMean ? kernels::cpu::GroupScoreReduce::kMean : kernels::cpu::GroupScoreReduce::kMax;
  std::vector<float> true_score(groups), router_score(groups);
  std::vector<int32_t> true_top, router_top;
  std::vector<char> is_true_top(groups);
  double sum = 0;
  for (int64_t i = begin; i < end; ++i) {
    const float* norms = samples.head_norms.data() + i * heads;
    for (int64_t g = 0; g < groups; ++g) {
      double s = 0;
      for (int64_t j = 0; j < per_group; ++j) s += norms[g * per_group + j];
      true_score[g] = static_cast<float>(s);
    }
    // The serving kernel's own reduction, so max/mean match it exactly.
    kernels::cpu::GroupScores(logits.data() + (i - begin) * heads, heads, groups, kernel_reduce, router_score.data());
    TopK(true_score.data(), groups, groups_kept, true_top);
    TopK(router_score.data(), groups, groups_kept, router_top);
    std::fill(is_true_top.begin(), is_true_top.end(), 0);
    for (int32_t j = 0; j < groups_kept; ++j) is_true_top[true_top[j]] = 1;
    int64_t hits = 0;
    for (int32_t j = 0; j < groups_kept; ++j) hits += is_true_top[router_top[j]];
    sum += static_cast<double>(hits) / groups_kept;
  }
  return sum / static_cast<double>(end - begin);
}

}  // namespace polar
