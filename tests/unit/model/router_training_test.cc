// Tests of head-router training: on synthetic layers whose head norms are a
// known monotone function of a linear map of the input (so a linear router
// can rank heads almost perfectly) training reaches high validation recall
// far above a random router, at the default model's size (20k x 576 -> 9
// heads / 3 groups); runs are bit-identical for a seed and any thread count;
// early stopping happens on stop_recall and on patience; GroupRecall equals a
// brute-force count; bad samples and options are InvalidArgument.
#include "engine/model/router_training.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace polar {
namespace {

using ::testing::HasSubstr;

// A layer's samples: inputs with per-feature scales from 0.1 to 30 and
// offsets (as normed hidden states times a gain have), head norms
// softplus(A z + c) + noise, with z the input undone of its scale and offset.
// Ranking heads by norm is then ranking them by a linear function of x.
RouterSamples LinearSamples(int64_t n, int64_t d, int64_t heads, int64_t groups, uint64_t seed, float noise) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> scale(d), offset(d), a(heads * d), c(heads);
  for (int64_t k = 0; k < d; ++k) {
    scale[k] = 0.1f * std::pow(300.0f, uniform(rng));
    offset[k] = 10.0f * (uniform(rng) - 0.5f);
  }
  for (float& v : a) v = normal(rng) / std::sqrt(static_cast<float>(d));
  for (float& v : c) v = 0.5f * normal(rng);
  RouterSamples s{n, d, heads, groups, std::vector<float>(n * d), std::vector<float>(n * heads)};
  std::vector<float> z(d);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < d; ++k) {
      z[k] = normal(rng);
      s.inputs[i * d + k] = z[k] * scale[k] + offset[k];
    }
    for (int64_t h = 0; h < heads; ++h) {
      double u = c[h];
      for (int64_t k = 0; k < d; ++k) u += a[h * d + k] * z[k];
      s.head_norms[i * heads + h] = static_cast<float>(std::log1p(std::exp(u))) + noise * std::abs(normal(rng));
    }
  }
  return s;
}

std::vector<float> RandomVector(size_t n, float stddev, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// ---- brute force, written independently of the code under test ------------

std::vector<double> LogitsOf(const RouterSamples& s, const std::vector<float>& w, const std::vector<float>& b,
                             int64_t i) {
  std::vector<double> logits(s.num_heads);
  for (int64_t h = 0; h < s.num_heads; ++h) {
    double sum = b[h];
    for (int64_t k = 0; k < s.input_dim; ++k)
      sum += static_cast<double>(w[h * s.input_dim + k]) * s.inputs[i * s.input_dim + k];
    logits[h] = sum;
  }
  return logits;
}

// Element i is among the k best iff fewer than k elements beat it (larger, or
// equal with a lower index).
bool InTopK(const std::vector<double>& v, size_t i, int64_t k) {
  int64_t better = 0;
  for (size_t j = 0; j < v.size(); ++j) better += v[j] > v[i] || (v[j] == v[i] && j < i);
  return better < k;
}

double BruteHeadRecall(const RouterSamples& s, const std::vector<float>& w, const std::vector<float>& b,
                       int64_t positives, int64_t begin, int64_t end) {
  double sum = 0;
  for (int64_t i = begin; i < end; ++i) {
    const std::vector<double> logits = LogitsOf(s, w, b, i);
    const std::vector<double> norms(s.head_norms.begin() + i * s.num_heads,
                                    s.head_norms.begin() + (i + 1) * s.num_heads);
    int64_t hits = 0;
    for (int64_t h = 0; h < s.num_heads; ++h) hits += InTopK(logits, h, positives) && InTopK(norms, h, positives);
    sum += static_cast<double>(hits) / positives;
  }
  return sum / (end - begin);
}

double BruteGroupRecall(const RouterSamples& s, const std::vector<float>& w, const std::vector<float>& b, int64_t keep,
                        GroupScore reduce, int64_t begin, int64_t end) {
  const int64_t r = s.num_heads / s.num_groups;
  double sum = 0;
  for (int64_t i = begin; i < end; ++i) {
    const std::vector<double> logits = LogitsOf(s, w, b, i);
    std::vector<double> router(s.num_groups), truth(s.num_groups);
    for (int64_t g = 0; g < s.num_groups; ++g) {
      double mx = -INFINITY, total = 0, norm_sum = 0;
      for (int64_t j = 0; j < r; ++j) {
        mx = std::max(mx, logits[g * r + j]);
        total += logits[g * r + j];
        norm_sum += s.head_norms[i * s.num_heads + g * r + j];
      }
      router[g] = reduce == GroupScore::kMax ? mx : total / r;
      truth[g] = norm_sum;
    }
    int64_t hits = 0;
    for (int64_t g = 0; g < s.num_groups; ++g) hits += InTopK(router, g, keep) && InTopK(truth, g, keep);
    sum += static_cast<double>(hits) / keep;
  }
  return sum / (end - begin);
}

// ---- training ----------------------------------------------------------------

TEST(TrainHeadRouterTest, LearnsALinearLayerAtTheDefaultModelsSize) {
  const RouterSamples s = LinearSamples(20000, 576, 9, 3, 11, 0.02f);
  RouterTrainingOptions options;
  int epochs_reported = 0;
  options.on_epoch = [&](int epoch, double loss, double recall) {
    ++epochs_reported;
    EXPECT_EQ(epoch, epochs_reported);
    EXPECT_TRUE(std::isfinite(loss) && loss > 0) << loss;
    std::cout << "  epoch " << epoch << ": loss " << loss << ", validation recall " << recall << "\n";
  };
  const auto start = std::chrono::steady_clock::now();
  auto router = TrainHeadRouter(s, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(router.ok()) << router.status();
  std::cout << "  20000 x 576 -> 9 heads: " << router->epochs_run << " epochs in " << seconds << " s ("
            << omp_get_max_threads() << " threads), best epoch " << router->best_epoch << ", validation recall "
            << router->validation_recall << "\n";
  EXPECT_EQ(epochs_reported, router->epochs_run);
  ASSERT_EQ(router->weight.size(), 9u * 576u);
  ASSERT_EQ(router->bias.size(), 9u);
  EXPECT_EQ(router->validation_begin, 18000);
  EXPECT_GT(router->validation_recall, 0.9);

  // The reported recall is the returned weights' recall on the raw held-out
  // inputs (5 positive heads of 9); rounding may flip a rare near-tie.
  EXPECT_NEAR(BruteHeadRecall(s, router->weight, router->bias, 5, 18000, 20000), router->validation_recall, 2e-3);

  // A random router ranks heads by chance: head recall about 5/9, one group
  // of three about 1/3.
  const std::vector<float> random_w = RandomVector(9 * 576, 0.05f, 3), random_b = RandomVector(9, 0.5f, 4);
  const double random_recall = BruteHeadRecall(s, random_w, random_b, 5, 18000, 20000);
  std::cout << "  random router: head recall " << random_recall << "\n";
  EXPECT_GT(router->validation_recall, random_recall + 0.3);
  for (GroupScore reduce : {GroupScore::kMax, GroupScore::kMean}) {
    auto trained = GroupRecall(s, router->weight, router->bias, 1, reduce, 18000, 20000);
    auto random = GroupRecall(s, random_w, random_b, 1, reduce, 18000, 20000);
    ASSERT_TRUE(trained.ok() && random.ok());
    std::cout << "  group recall, 1 of 3 groups, " << (reduce == GroupScore::kMax ? "max" : "mean") << ": trained "
              << *trained << ", random " << *random << "\n";
    EXPECT_GT(*trained, *random + 0.3);
  }
}

TEST(TrainHeadRouterTest, BitIdenticalForASeedAndAnyThreadCount) {
  const RouterSamples s = LinearSamples(3000, 96, 9, 3, 21, 0.1f);
  RouterTrainingOptions options;
  options.max_epochs = 6;
  options.stop_recall = 1.0f;
  auto first = TrainHeadRouter(s, options);
  auto second = TrainHeadRouter(s, options);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  auto one_thread = TrainHeadRouter(s, options);
  omp_set_num_threads(2);
  auto two_threads = TrainHeadRouter(s, options);
  omp_set_num_threads(threads);
  options.seed = 2;
  auto other_seed = TrainHeadRouter(s, options);
  ASSERT_TRUE(first.ok() && second.ok() && one_thread.ok() && two_threads.ok() && other_seed.ok());
  for (const TrainedRouter* run : {&*second, &*one_thread, &*two_threads}) {
    EXPECT_EQ(run->weight, first->weight);
    EXPECT_EQ(run->bias, first->bias);
    EXPECT_EQ(run->validation_recall, first->validation_recall);
    EXPECT_EQ(run->epochs_run, first->epochs_run);
    EXPECT_EQ(run->best_epoch, first->best_epoch);
  }
  // The seed orders the minibatches, so it changes the weights.
  EXPECT_NE(other_seed->weight, first->weight);
}

TEST(TrainHeadRouterTest, StopsOnceStopRecallIsReached) {
  const RouterSamples s = LinearSamples(4000, 32, 8, 2, 31, 0.0f);
  RouterTrainingOptions options;
  options.max_epochs = 50;
  options.stop_recall = 0.9f;
  options.learning_rate = 1e-2f;  // few steps per epoch on 3600 samples: reach 0.9 in a handful of epochs
  auto router = TrainHeadRouter(s, options);
  ASSERT_TRUE(router.ok()) << router.status();
  EXPECT_LT(router->epochs_run, 20);
  EXPECT_GE(router->validation_recall, 0.9);
  EXPECT_EQ(router->best_epoch, router->epochs_run);  // it stops on the epoch that reached it
}

TEST(TrainHeadRouterTest, StopsAfterPatienceEpochsWithoutImprovementAndKeepsTheBest) {
  // Norms independent of the inputs: nothing to learn, recall wanders.
  RouterSamples s = LinearSamples(3000, 16, 6, 3, 41, 0.0f);
  s.head_norms = RandomVector(s.head_norms.size(), 1.0f, 42);
  for (float& v : s.head_norms) v = std::abs(v);
  RouterTrainingOptions options;
  options.max_epochs = 50;
  options.patience = 2;
  std::vector<double> recalls;
  options.on_epoch = [&](int, double, double recall) { recalls.push_back(recall); };
  auto router = TrainHeadRouter(s, options);
  ASSERT_TRUE(router.ok()) << router.status();
  EXPECT_LT(router->epochs_run, 50);
  EXPECT_EQ(router->epochs_run, router->best_epoch + 2);
  ASSERT_EQ(recalls.size(), static_cast<size_t>(router->epochs_run));
  EXPECT_EQ(router->validation_recall, *std::max_element(recalls.begin(), recalls.end()));
  EXPECT_EQ(router->validation_recall, recalls[router->best_epoch - 1]);
  EXPECT_LT(router->validation_recall, 0.75);  // no signal: near the chance level 3/6
}

// ---- GroupRecall -------------------------------------------------------------

TEST(GroupRecallTest, MatchesBruteForceForEveryBudgetAndReduce) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{4, 1}, {4, 2}, {4, 4}, {6, 3}, {8, 2}, {9, 3}, {12, 4}};
  uint64_t seed = 100;
  for (const auto& [heads, groups] : shapes) {
    const RouterSamples s = LinearSamples(40, 7, heads, groups, ++seed, 0.3f);
    const std::vector<float> w = RandomVector(heads * 7, 0.5f, ++seed), b = RandomVector(heads, 0.5f, ++seed);
    for (GroupScore reduce : {GroupScore::kMax, GroupScore::kMean}) {
      for (int32_t keep = 1; keep <= groups; ++keep) {
        for (const auto& [begin, end] : std::vector<std::pair<int64_t, int64_t>>{{0, 40}, {5, 23}, {39, 40}}) {
          SCOPED_TRACE(testing::Message() << heads << "/" << groups << " heads/groups, keep " << keep << ", reduce "
                                          << static_cast<int>(reduce) << ", [" << begin << ", " << end << ")");
          auto recall = GroupRecall(s, w, b, keep, reduce, begin, end);
          ASSERT_TRUE(recall.ok()) << recall.status();
          EXPECT_NEAR(*recall, BruteGroupRecall(s, w, b, keep, reduce, begin, end), 1e-12);
          if (keep == groups) {
            EXPECT_EQ(*recall, 1.0);
          }
        }
      }
    }
  }
}

TEST(GroupRecallTest, TiesGoToTheLowerGroupAsAtServing) {
  // Every head gets the same logit (equal weight rows), so the router keeps
  // groups 0, 1, ... in order; the true best group is always the last one.
  RouterSamples s = LinearSamples(10, 5, 6, 3, 7, 0.0f);
  for (int64_t i = 0; i < s.num_samples; ++i) {
    for (int64_t h = 0; h < 6; ++h)
      s.head_norms[i * 6 + h] = 1.0f + static_cast<float>(h) + 0.1f * static_cast<float>(i);
  }
  const std::vector<float> row = RandomVector(5, 1.0f, 8);
  std::vector<float> w;
  for (int h = 0; h < 6; ++h) w.insert(w.end(), row.begin(), row.end());
  const std::vector<float> b(6, 0.7f);
  for (GroupScore reduce : {GroupScore::kMax, GroupScore::kMean}) {
    EXPECT_EQ(*GroupRecall(s, w, b, 1, reduce, 0, 10), 0.0);  // keeps {0}, best is {2}
    EXPECT_EQ(*GroupRecall(s, w, b, 2, reduce, 0, 10), 0.5);  // keeps {0, 1}, best {1, 2}
    EXPECT_EQ(*GroupRecall(s, w, b, 3, reduce, 0, 10), 1.0);
  }
}

// ---- bad input ---------------------------------------------------------------

// An InvalidArgument error whose message contains `message`.
template <typename T>
void ExpectInvalidArgument(const absl::StatusOr<T>& result, const std::string& message) {
  ASSERT_FALSE(result.ok()) << message;
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr(message));
}

TEST(TrainHeadRouterTest, RejectsBadSamplesAndOptions) {
  const RouterSamples good = LinearSamples(50, 8, 6, 3, 51, 0.1f);
  const RouterTrainingOptions defaults;
  auto expect_invalid = [&](const RouterSamples& s, const RouterTrainingOptions& o, const std::string& message) {
    ExpectInvalidArgument(TrainHeadRouter(s, o), message);
  };
  RouterSamples s = good;
  s.num_samples = 0;
  s.inputs.clear();
  s.head_norms.clear();
  expect_invalid(s, defaults, "none (num_samples = 0)");
  s = good;
  s.num_groups = 4;
  expect_invalid(s, defaults, "4 groups do not divide 6 heads");
  s = good;
  s.inputs.pop_back();
  expect_invalid(s, defaults, "inputs hold 399 floats, expected 50 x 8");
  s = good;
  s.head_norms.push_back(1.5f);
  expect_invalid(s, defaults, "head_norms hold 301 floats, expected 50 x 6");
  s = good;
  s.input_dim = 0;
  expect_invalid(s, defaults, "must all be positive");
  s = good;
  s.inputs[3 * 8 + 2] = NAN;
  expect_invalid(s, defaults, "input of sample 3 is not finite");
  s = good;
  s.head_norms[7 * 6] = INFINITY;
  expect_invalid(s, defaults, "head norm of sample 7 is not finite");
  s = LinearSamples(1, 8, 6, 3, 52, 0.1f);
  expect_invalid(s, defaults, "at least 2 are needed");

  RouterTrainingOptions o = defaults;
  o.positive_fraction = 0.0f;
  expect_invalid(good, o, "positive_fraction");
  o = defaults;
  o.batch_size = 0;
  expect_invalid(good, o, "batch_size 0");
  o = defaults;
  o.max_epochs = 0;
  expect_invalid(good, o, "max_epochs 0");
  o = defaults;
  o.validation_fraction = 1.0f;
  expect_invalid(good, o, "validation_fraction");
  o = defaults;
  o.learning_rate = -1e-3f;
  expect_invalid(good, o, "learning_rate");
  o = defaults;
  o.patience = 0;
  expect_invalid(good, o, "patience 0");
}

TEST(GroupRecallTest, RejectsBadArguments) {
  const RouterSamples s = LinearSamples(20, 8, 6, 3, 61, 0.1f);
  const std::vector<float> w = RandomVector(6 * 8, 0.5f, 62), b = RandomVector(6, 0.5f, 63);
  ExpectInvalidArgument(GroupRecall(s, std::vector<float>(w.begin() + 1, w.end()), b, 1, GroupScore::kMax, 0, 20),
                        "router of 47 weights");
  ExpectInvalidArgument(GroupRecall(s, w, b, 0, GroupScore::kMax, 0, 20), "groups_kept 0 not in [1, 3]");
  ExpectInvalidArgument(GroupRecall(s, w, b, 4, GroupScore::kMean, 0, 20), "groups_kept 4 not in [1, 3]");
  ExpectInvalidArgument(GroupRecall(s, w, b, 1, GroupScore::kMax, 5, 5), "sample range [5, 5)");
  ExpectInvalidArgument(GroupRecall(s, w, b, 1, GroupScore::kMax, 0, 21), "outside [0, 20)");
  RouterSamples bad = s;
  bad.num_groups = 4;
  ExpectInvalidArgument(GroupRecall(bad, w, b, 1, GroupScore::kMax, 0, 20), "4 groups do not divide 6 heads");
}

}  // namespace
}  // namespace polar
