// Tests for SequenceSampler and SamplingParams: exact checks (greedy,
// penalty, logprobs, the inverse-CDF draw against the documented stream),
// determinism and batch independence, and fixed-seed statistical checks of
// temperature, top-k and top-p against distributions computed here in double.
#include "engine/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace polar {
namespace {

using ::testing::HasSubstr;

std::vector<float> RandomLogits(int64_t vocab, uint64_t seed, float scale = 3.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> logits(vocab);
  for (float& x : logits) x = dist(rng);
  return logits;
}

// softmax(logits / t) in double.
std::vector<double> Softmax(const std::vector<float>& logits, double t = 1.0) {
  double max_value = -std::numeric_limits<double>::infinity();
  for (float x : logits) max_value = std::max(max_value, x / t);
  std::vector<double> p(logits.size());
  double z = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) z += (p[i] = std::exp(logits[i] / t - max_value));
  for (double& x : p) x /= z;
  return p;
}

// Draws `n` tokens with one sampler from copies of `logits`.
std::map<int32_t, int64_t> Draw(const SamplingParams& params, const std::vector<float>& logits,
                                int64_t n) {
  SequenceSampler sampler(params);
  std::map<int32_t, int64_t> counts;
  std::vector<float> scratch;
  for (int64_t i = 0; i < n; ++i) {
    scratch = logits;
    ++counts[sampler.Sample(scratch, {})];
  }
  return counts;
}

// Every count within 5 standard deviations (+1) of n * expected[token].
void ExpectFrequencies(const std::map<int32_t, int64_t>& counts, const std::vector<double>& expected,
                       int64_t n) {
  for (size_t id = 0; id < expected.size(); ++id) {
    const double mean = n * expected[id];
    const double sd = std::sqrt(n * expected[id] * (1.0 - expected[id]));
    auto it = counts.find(static_cast<int32_t>(id));
    const int64_t got = it == counts.end() ? 0 : it->second;
    EXPECT_LE(std::abs(got - mean), 5.0 * sd + 1.0)
        << "token " << id << ": " << got << " draws, expected " << mean;
  }
}

// Ids sorted by probability (desc), ties by id; the smallest prefix with mass >= p.
std::set<int32_t> NucleusSet(const std::vector<double>& probs, double p) {
  std::vector<int32_t> ids(probs.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
  });
  std::set<int32_t> kept;
  double cumulative = 0.0;
  for (int32_t id : ids) {
    kept.insert(id);
    cumulative += probs[id];
    if (cumulative >= p) break;
  }
  return kept;
}

TEST(SamplingParamsTest, DefaultsAreValid) {
  EXPECT_TRUE(SamplingParams{}.Validate(512).ok());
}

TEST(SamplingParamsTest, RejectsBadValuesNamingTheField) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    SamplingParams params;
    const char* field;
  };
  std::vector<Case> cases;
  auto add = [&](auto mutate, const char* field) {
    SamplingParams p;
    mutate(p);
    cases.push_back({p, field});
  };
  add([](SamplingParams& p) { p.temperature = -0.5f; }, "temperature");
  add([&](SamplingParams& p) { p.temperature = nan; }, "temperature");
  add([&](SamplingParams& p) { p.temperature = inf; }, "temperature");
  add([](SamplingParams& p) { p.top_p = 0.0f; }, "top_p");
  add([](SamplingParams& p) { p.top_p = 1.5f; }, "top_p");
  add([&](SamplingParams& p) { p.top_p = nan; }, "top_p");
  add([](SamplingParams& p) { p.top_k = -1; }, "top_k");
  add([](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty");
  add([](SamplingParams& p) { p.repetition_penalty = -1.0f; }, "repetition_penalty");
  add([&](SamplingParams& p) { p.repetition_penalty = nan; }, "repetition_penalty");
  add([](SamplingParams& p) { p.stop_token_ids = {3, 512}; }, "stop_token_ids");
  add([](SamplingParams& p) { p.stop_token_ids = {-1}; }, "stop_token_ids");
  add([](SamplingParams& p) { p.max_tokens = 0; }, "max_tokens");
  for (const Case& c : cases) {
    const absl::Status status = c.params.Validate(512);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(status.message(), HasSubstr(c.field));
  }
  EXPECT_EQ(SamplingParams{}.Validate(0).code(), absl::StatusCode::kInvalidArgument);
  SamplingParams edge;
  edge.top_p = 1.0f;
  edge.top_k = 100000;  // larger than the vocabulary: off, not an error
  edge.temperature = 0.0f;
  edge.stop_token_ids = {0, 511};
  EXPECT_TRUE(edge.Validate(512).ok());
}

TEST(SequenceSamplerTest, GreedyIsArgmaxWithLowestIdOnTies) {
  SamplingParams params;
  params.temperature = 0.0f;
  SequenceSampler sampler(params);
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::vector<float> logits = RandomLogits(1000, seed);
    const int32_t expected =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(sampler.Sample(logits, {}), expected);
  }
  std::vector<float> tied = RandomLogits(100, 99, 0.1f);
  tied[17] = tied[42] = tied[90] = 5.0f;
  EXPECT_EQ(sampler.Sample(tied, {}), 17);
  EXPECT_EQ(sampler.steps(), 21u);  // greedy calls consume the stream too
}

TEST(SequenceSamplerTest, DrawIsInverseCdfOfTheDocumentedStream) {
  // With no truncation, the n-th draw is the first id whose cumulative
  // probability exceeds Uniform(seed, n).
  SamplingParams params;
  params.temperature = 0.8f;
  params.seed = 12345;
  SequenceSampler sampler(params);
  for (uint64_t n = 0; n < 200; ++n) {
    std::vector<float> logits = RandomLogits(300, 1000 + n);
    const std::vector<double> probs = Softmax(logits, 0.8);
    const double u = SequenceSampler::Uniform(params.seed, n);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    double cumulative = 0.0;
    int32_t expected = -1;
    for (size_t i = 0; i < probs.size(); ++i) {
      cumulative += probs[i];
      if (cumulative > u) {
        expected = static_cast<int32_t>(i);
        break;
      }
    }
    const int32_t got = sampler.Sample(logits, {});
    // A draw that lands within rounding of a bucket edge may go either way.
    if (got != expected) {
      double edge = 0.0;
      for (int32_t i = 0; i <= std::min(got, expected); ++i) edge += probs[i];
      EXPECT_NEAR(edge, u, 1e-6) << "step " << n;  // float exps in the sampler
    }
  }
}

TEST(SequenceSamplerTest, SameSeedSameTokensAndDifferentSeedsDiffer) {
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_k = 50;
  params.top_p = 0.95f;
  params.seed = 7;
  SequenceSampler a(params), b(params);
  params.seed = 8;
  SequenceSampler c(params);
  int differ = 0;
  for (int step = 0; step < 100; ++step) {
    const std::vector<float> logits = RandomLogits(2048, 500 + step, 1.0f);
    std::vector<float> la = logits, lb = logits, lc = logits;
    const int32_t ta = a.Sample(la, {}), tb = b.Sample(lb, {}), tc = c.Sample(lc, {});
    EXPECT_EQ(ta, tb) << "step " << step;
    differ += ta != tc;
  }
  EXPECT_GT(differ, 50);
}

TEST(SequenceSamplerTest, OutputIndependentOfOtherSequencesInTheBatch) {
  SamplingParams params;
  params.temperature = 0.9f;
  params.seed = 2024;
  params.repetition_penalty = 1.2f;
  // Alone.
  std::vector<int32_t> alone;
  {
    SequenceSampler s(params);
    std::vector<int32_t> history = {1, 2, 3};
    for (int step = 0; step < 64; ++step) {
      std::vector<float> logits = RandomLogits(512, 77 + step);
      history.push_back(s.Sample(logits, history));
    }
    alone.assign(history.begin() + 3, history.end());
  }
  // Same sequence batched with two others (same seed even), visited in a
  // different order every step and with a varying number of neighbour calls.
  SequenceSampler s(params), other1(params), other2(params);
  std::vector<int32_t> history = {1, 2, 3};
  for (int step = 0; step < 64; ++step) {
    for (int extra = 0; extra < step % 3; ++extra) {
      std::vector<float> noise = RandomLogits(512, 9000 + step * 7 + extra);
      other1.Sample(noise, {});
    }
    std::vector<float> logits = RandomLogits(512, 77 + step);
    history.push_back(s.Sample(logits, history));
    std::vector<float> noise = RandomLogits(512, 5000 + step);
    other2.Sample(noise, history);
  }
  EXPECT_EQ(std::vector<int32_t>(history.begin() + 3, history.end()), alone);
}

TEST(SequenceSamplerTest, TemperatureFrequenciesMatchSoftmax) {
  const std::vector<float> logits = RandomLogits(16, 3, 1.0f);
  SamplingParams params;
  params.temperature = 0.7f;
  params.seed = 42;
  const int64_t n = 40000;
  const auto counts = Draw(params, logits, n);
  ExpectFrequencies(counts, Softmax(logits, 0.7), n);
}

TEST(SequenceSamplerTest, TopKKeepsExactlyKTokens) {
  const int64_t vocab = 200;
  const std::vector<float> logits = RandomLogits(vocab, 11, 0.5f);
  SamplingParams params;
  params.top_k = 7;
  params.seed = 5;
  const int64_t n = 30000;
  const auto counts = Draw(params, logits, n);
  // Expected: softmax restricted to the 7 largest logits, renormalised.
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + 7, ids.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  std::vector<double> probs = Softmax(logits);
  std::vector<double> expected(vocab, 0.0);
  double mass = 0.0;
  for (int i = 0; i < 7; ++i) mass += probs[ids[i]];
  for (int i = 0; i < 7; ++i) expected[ids[i]] = probs[ids[i]] / mass;
  EXPECT_EQ(counts.size(), 7u);
  for (const auto& [id, count] : counts) EXPECT_GT(expected[id], 0.0) << id;
  ExpectFrequencies(counts, expected, n);
}

TEST(SequenceSamplerTest, TopKOnLargeVocabularyStaysInTopK) {
  const int64_t vocab = 128256;
  const std::vector<float> logits = RandomLogits(vocab, 21, 2.0f);
  std::vector<float> sorted = logits;
  std::nth_element(sorted.begin(), sorted.begin() + 39, sorted.end(), std::greater<float>());
  const float kth = sorted[39];
  SamplingParams params;
  params.top_k = 40;
  params.seed = 9;
  const auto counts = Draw(params, logits, 300);
  for (const auto& [id, count] : counts) EXPECT_GE(logits[id], kth) << id;
  EXPECT_GT(counts.size(), 5u);
}

TEST(SequenceSamplerTest, TopPSupportIsSmallestSetReachingP) {
  // Small vocabulary, peaked distribution: the nucleus is a few tokens.
  {
    const std::vector<float> logits = RandomLogits(50, 31, 2.0f);
    SamplingParams params;
    params.top_p = 0.8f;
    params.seed = 77;
    const int64_t n = 30000;
    const auto counts = Draw(params, logits, n);
    const std::vector<double> probs = Softmax(logits);
    const std::set<int32_t> nucleus = NucleusSet(probs, 0.8);
    std::set<int32_t> seen;
    for (const auto& [id, count] : counts) seen.insert(id);
    EXPECT_EQ(seen, nucleus);
    std::vector<double> expected(probs.size(), 0.0);
    double mass = 0.0;
    for (int32_t id : nucleus) mass += probs[id];
    for (int32_t id : nucleus) expected[id] = probs[id] / mass;
    ExpectFrequencies(counts, expected, n);
  }
  // Flat distribution over 1000 tokens: the nucleus holds hundreds, so the
  // sampler must widen its sorted prefix past the first cut several times.
  {
    std::mt19937_64 rng(8);
    std::uniform_real_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> logits(1000);
    for (float& x : logits) x = dist(rng);
    SamplingParams params;
    params.top_p = 0.5f;
    params.seed = 3;
    const auto counts = Draw(params, logits, 40000);
    const std::set<int32_t> nucleus = NucleusSet(Softmax(logits), 0.5);
    ASSERT_GT(nucleus.size(), 256u);
    std::set<int32_t> seen;
    for (const auto& [id, count] : counts) seen.insert(id);
    EXPECT_EQ(seen, nucleus);
  }
}

TEST(SequenceSamplerTest, LargeTopKAndTiesAtTheBoundary) {
  // k above the heap-selection bound takes the nth_element path.
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<float> dist(0.0f, 0.5f);
  std::vector<float> logits(2048);
  for (float& x : logits) x = dist(rng);
  SamplingParams params;
  params.top_k = 1100;
  params.seed = 4;
  const auto counts = Draw(params, logits, 50000);  // ~45 draws per kept token
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const std::set<int32_t> top(ids.begin(), ids.begin() + 1100);
  std::set<int32_t> seen;
  for (const auto& [id, count] : counts) seen.insert(id);
  EXPECT_EQ(seen, top);

  // Equal logits straddling the boundary: the lowest ids are kept.
  std::vector<float> tied(10, -1.0f);
  for (int id : {2, 4, 5, 8}) tied[id] = 3.0f;
  params.top_k = 3;
  std::set<int32_t> tied_seen;
  for (const auto& [id, count] : Draw(params, tied, 3000)) tied_seen.insert(id);
  EXPECT_EQ(tied_seen, (std::set<int32_t>{2, 4, 5}));
}

TEST(SequenceSamplerTest, TopPReachesIntoALongFlatTail) {
  // One dominant token and 5000 tail tokens at relative probability e^-10:
  // the dominant one holds ~82% < p, so the nucleus must take 2298 tail
  // tokens (lowest ids first, ties), below the sampler's first cut.
  std::vector<float> logits(5001, 0.0f);
  logits[0] = 10.0f;
  const std::vector<double> probs = Softmax(logits);
  const std::set<int32_t> nucleus = NucleusSet(probs, 0.9);
  ASSERT_EQ(nucleus.size(), 2299u);
  SamplingParams params;
  params.top_p = 0.9f;
  params.seed = 21;
  const int64_t n = 20000;
  const auto counts = Draw(params, logits, n);
  int64_t tail_draws = 0;
  int32_t max_tail_id = 0;
  for (const auto& [id, count] : counts) {
    EXPECT_TRUE(nucleus.count(id)) << id;
    if (id != 0) {
      tail_draws += count;
      max_tail_id = std::max(max_tail_id, id);
    }
  }
  double nucleus_mass = 0.0;
  for (int32_t id : nucleus) nucleus_mass += probs[id];
  const double p0 = probs[0] / nucleus_mass;
  EXPECT_NEAR(static_cast<double>(n - tail_draws) / n, p0, 5.0 * std::sqrt(p0 * (1 - p0) / n));
  EXPECT_GT(max_tail_id, 2000);
}

TEST(SequenceSamplerTest, TopKThenTopPAppliesBothInOrder) {
  const std::vector<float> logits = RandomLogits(100, 41, 1.0f);
  SamplingParams params;
  params.top_k = 10;
  params.top_p = 0.6f;
  params.seed = 13;
  const int64_t n = 30000;
  const auto counts = Draw(params, logits, n);
  // top-k first, renormalise, then the nucleus of that.
  std::vector<double> probs = Softmax(logits);
  std::vector<int32_t> ids(probs.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return probs[a] > probs[b]; });
  std::vector<double> topk(probs.size(), 0.0);
  double mass = 0.0;
  for (int i = 0; i < 10; ++i) mass += probs[ids[i]];
  for (int i = 0; i < 10; ++i) topk[ids[i]] = probs[ids[i]] / mass;
  const std::set<int32_t> nucleus = NucleusSet(topk, 0.6);
  std::set<int32_t> seen;
  for (const auto& [id, count] : counts) seen.insert(id);
  EXPECT_EQ(seen, nucleus);
}

TEST(SequenceSamplerTest, RepetitionPenaltyExactEffect) {
  const int64_t vocab = 64;
  std::vector<float> logits = RandomLogits(vocab, 51, 2.0f);
  logits[5] = 2.5f;    // positive: divided
  logits[9] = -1.25f;  // negative: multiplied
  logits[12] = 0.0f;   // zero stays zero
  SamplingParams params;
  params.repetition_penalty = 1.7f;
  params.temperature = 1.0f;
  // Duplicates count once; out-of-range ids are ignored.
  const std::vector<int32_t> history = {5, 9, 5, 12, 9, 5, -3, 64, 1000};
  std::vector<float> penalized = logits;
  penalized[5] = 2.5f / 1.7f;
  penalized[9] = -1.25f * 1.7f;
  const std::vector<double> expected = Softmax(penalized);
  SequenceSampler sampler(params);
  std::vector<float> scratch = logits;
  const SampleOutput out = sampler.SampleWithLogprobs(scratch, history, vocab);
  ASSERT_EQ(out.top_logprobs.size(), static_cast<size_t>(vocab));
  for (const TokenLogprob& t : out.top_logprobs) {
    EXPECT_NEAR(t.logprob, std::log(expected[t.token]), 1e-5) << t.token;
  }
  // Greedy flips when the penalty pushes the best token below the runner-up.
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  greedy.repetition_penalty = 2.0f;
  std::vector<float> two(vocab, -5.0f);
  two[3] = 4.0f;
  two[8] = 3.0f;
  std::vector<float> copy = two;
  EXPECT_EQ(SequenceSampler(greedy).Sample(copy, std::vector<int32_t>{1, 2}), 3);
  copy = two;
  EXPECT_EQ(SequenceSampler(greedy).Sample(copy, std::vector<int32_t>{3}), 8);
  // A penalty below 1 favours repeats.
  greedy.repetition_penalty = 0.5f;
  copy = two;
  EXPECT_EQ(SequenceSampler(greedy).Sample(copy, std::vector<int32_t>{8}), 8);
}

TEST(SequenceSamplerTest, LogprobsAreTemperatureScaledLogSoftmaxBeforeTruncation) {
  const int64_t vocab = 500;
  const std::vector<float> logits = RandomLogits(vocab, 61, 2.0f);
  SamplingParams params;
  params.temperature = 0.6f;
  params.top_k = 5;
  params.top_p = 0.9f;
  params.seed = 99;
  SequenceSampler with(params), without(params);
  const std::vector<double> expected = Softmax(logits, 0.6);
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return expected[a] > expected[b]; });
  for (int step = 0; step < 20; ++step) {
    std::vector<float> a = logits, b = logits;
    const SampleOutput out = with.SampleWithLogprobs(a, {}, 8);
    EXPECT_EQ(out.token, without.Sample(b, {}));
    EXPECT_NEAR(out.logprob, std::log(expected[out.token]), 1e-5);
    ASSERT_EQ(out.top_logprobs.size(), 8u);
    for (int i = 0; i < 8; ++i) {
      EXPECT_EQ(out.top_logprobs[i].token, order[i]);
      // Tokens outside top-k still get their untruncated logprob.
      EXPECT_NEAR(out.top_logprobs[i].logprob, std::log(expected[order[i]]), 1e-5);
    }
  }
  // Greedy requests report the temperature-1 distribution.
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<float> c = logits;
  const SampleOutput g = SequenceSampler(greedy).SampleWithLogprobs(c, {}, 1);
  EXPECT_EQ(g.token, order[0]);
  EXPECT_NEAR(g.logprob, std::log(Softmax(logits)[order[0]]), 1e-5);
  EXPECT_EQ(g.top_logprobs[0].token, order[0]);
}

TEST(SequenceSamplerTest, NonFiniteLogitsHaveDefinedResults) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<float> logits = RandomLogits(32, 71, 1.0f);
  logits[0] = nan;
  logits[4] = 10.0f;
  EXPECT_EQ(SequenceSampler(greedy).Sample(logits, {}), 4);

  SamplingParams sampled;
  sampled.seed = 1;
  std::vector<float> with_inf = RandomLogits(32, 72, 1.0f);
  with_inf[6] = inf;
  with_inf[20] = inf;
  std::map<int32_t, int64_t> counts = Draw(sampled, with_inf, 4000);
  ASSERT_EQ(counts.size(), 2u);
  ExpectFrequencies(counts, [] {
    std::vector<double> e(32, 0.0);
    e[6] = e[20] = 0.5;
    return e;
  }(), 4000);

  std::vector<float> none(32, -inf);
  none[3] = nan;
  counts = Draw(sampled, none, 200);
  for (const auto& [id, count] : counts) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 32);
  }
  EXPECT_GT(counts.size(), 10u);  // uniform over all 32
}

TEST(IsStopTokenTest, StopIdsAndEndOfGeneration) {
  SamplingParams params;
  params.stop_token_ids = {7, 9};
  const std::vector<int32_t> eog = {2, 3};
  EXPECT_TRUE(IsStopToken(params, eog, 7));
  EXPECT_TRUE(IsStopToken(params, eog, 9));
  EXPECT_TRUE(IsStopToken(params, eog, 2));
  EXPECT_FALSE(IsStopToken(params, eog, 5));
  params.ignore_eos = true;
  EXPECT_FALSE(IsStopToken(params, eog, 2));
  EXPECT_TRUE(IsStopToken(params, eog, 9));  // explicit stop ids still stop
}

}  // namespace
}  // namespace polar
