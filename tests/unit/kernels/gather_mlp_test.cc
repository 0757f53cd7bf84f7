// The MLP gather pair and neuron selection (kernels/cpu/gather_mlp.h):
// fc1/fc2 against a direct double-precision reference over shapes and
// neuron counts (0, 1, some, all); with every neuron selected they equal
// Linear + ReLU + Linear bit for bit; with a subset they equal the dense MLP
// with the unselected activations zeroed bit for bit; a row's output does
// not depend on the other rows of the call or the thread count; the
// selection is the top-k of the summed ReLU'd scores by definition.
#include "kernels/cpu/gather_mlp.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/gemm.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace polar::kernels::cpu {
namespace {

// k distinct neurons of [0, ffn), ascending.
std::vector<int32_t> RandomNeurons(int64_t ffn, int64_t k, std::mt19937& rng) {
  std::vector<int32_t> all(ffn);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(k);
  std::sort(all.begin(), all.end());
  return all;
}

std::vector<float> Transpose(const std::vector<float>& w, int64_t rows, int64_t cols) {
  std::vector<float> t(w.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = w[r * cols + c];
  }
  return t;
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Shape {
  int64_t rows, d, ffn;
};
// Every fc1 tile (1..4 rows, 1..3 neurons), a partial last chunk of d, fc2
// column tails of 1..15 columns, several thread panels.
const Shape kShapes[] = {{1, 8, 16},   {2, 13, 40},  {3, 64, 256},  {4, 100, 77},
                         {5, 7, 9},    {9, 64, 256}, {17, 33, 130}, {6, 200, 1100}};

class GatherMlpTest : public RestoresOmpThreadsTest {};

// The MLP of one shape: weights, inputs, and the old y to accumulate into.
struct Mlp {
  Shape s;
  std::vector<float> x, w1, b1, w2, w2t, b2, y0;  // w2: [d, ffn] (fc2.weight); w2t: [ffn, d]
  Mlp(const Shape& shape, std::mt19937& rng)
      : s(shape),
        x(Random(s.rows * s.d, rng)),
        w1(Random(s.ffn * s.d, rng)),
        b1(Random(s.ffn, rng)),
        w2(Random(s.d * s.ffn, rng)),
        w2t(Transpose(w2, s.d, s.ffn)),
        b2(Random(s.d, rng)),
        y0(Random(s.rows * s.d, rng)) {}

  std::vector<float> Fc1(const std::vector<int32_t>& idx) const {
    std::vector<float> h(s.rows * idx.size(), std::nanf(""));
    GatherFc1Relu(x.data(), w1.data(), b1.data(), idx.data(), s.rows, s.d, static_cast<int64_t>(idx.size()), h.data());
    return h;
  }
  std::vector<float> Fc2(const std::vector<float>& h, const std::vector<int32_t>& idx, bool accumulate) const {
    std::vector<float> y = accumulate ? y0 : std::vector<float>(s.rows * s.d, std::nanf(""));
    GatherFc2(h.data(), w2t.data(), b2.data(), idx.data(), s.rows, static_cast<int64_t>(idx.size()), s.d, y.data(),
              accumulate);
    return y;
  }
  // The dense MLP with only `idx`'s activations kept (all: the dense MLP).
  std::vector<float> DenseMasked(const std::vector<int32_t>& idx) const {
    std::vector<float> h(s.rows * s.ffn);
    Linear(x.data(), w1.data(), b1.data(), s.rows, s.d, s.ffn, h.data());
    Relu(h.data(), h.size());
    MaskMlpNeurons(h.data(), s.rows, s.ffn, idx.data(), static_cast<int64_t>(idx.size()));
    std::vector<float> y = y0;
    Linear(h.data(), w2.data(), b2.data(), s.rows, s.ffn, s.d, y.data(), /*accumulate=*/true);
    return y;
  }
};

std::vector<int64_t> NeuronCounts(int64_t ffn) { return {0, 1, std::max<int64_t>(1, ffn / 3), ffn - 1, ffn}; }

TEST_F(GatherMlpTest, MatchesDoubleReference) {
  std::mt19937 rng(1);
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    for (const Shape& s : kShapes) {
      const Mlp m(s, rng);
      for (int64_t k : NeuronCounts(s.ffn)) {
        SCOPED_TRACE(testing::Message() << "rows " << s.rows << " d " << s.d << " ffn " << s.ffn << " k " << k
                                        << " threads " << threads);
        const std::vector<int32_t> idx = RandomNeurons(s.ffn, k, rng);
        const std::vector<float> h = m.Fc1(idx);
        // fc1: |error| <= a few ulps of the sum of |terms|.
        for (int64_t r = 0; r < s.rows; ++r) {
          for (int64_t i = 0; i < k; ++i) {
            double sum = m.b1[idx[i]], mag = std::fabs(m.b1[idx[i]]);
            for (int64_t j = 0; j < s.d; ++j) {
              const double term = double(m.x[r * s.d + j]) * m.w1[idx[i] * s.d + j];
              sum += term;
              mag += std::fabs(term);
            }
            ASSERT_NEAR(h[r * k + i], std::max(sum, 0.0), 1e-5 * mag + 1e-30) << "row " << r << " neuron " << idx[i];
          }
        }
        // fc2 on those activations, fresh and accumulating.
        for (bool accumulate : {false, true}) {
          const std::vector<float> y = m.Fc2(h, idx, accumulate);
          for (int64_t r = 0; r < s.rows; ++r) {
            for (int64_t c = 0; c < s.d; ++c) {
              double sum = m.b2[c], mag = std::fabs(m.b2[c]);
              for (int64_t i = 0; i < k; ++i) {
                const double term = double(h[r * k + i]) * m.w2t[idx[i] * s.d + c];
                sum += term;
                mag += std::fabs(term);
              }
              if (accumulate) sum += m.y0[r * s.d + c], mag += std::fabs(m.y0[r * s.d + c]);
              ASSERT_NEAR(y[r * s.d + c], sum, 1e-5 * mag + 1e-30)
                  << "row " << r << " column " << c << " accumulate " << accumulate;
            }
          }
        }
      }
    }
  }
}

TEST_F(GatherMlpTest, AllNeuronsEqualTheDenseMlpBitForBit) {
  std::mt19937 rng(2);
  for (const Shape& s : kShapes) {
    const Mlp m(s, rng);
    std::vector<int32_t> all(s.ffn);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_TRUE(BitEqual(m.Fc2(m.Fc1(all), all, true), m.DenseMasked(all)))
        << "rows " << s.rows << " d " << s.d << " ffn " << s.ffn;
  }
}

TEST_F(GatherMlpTest, SubsetEqualsTheDenseMlpWithUnselectedNeuronsMaskedBitForBit) {
  std::mt19937 rng(3);
  for (const Shape& s : kShapes) {
    const Mlp m(s, rng);
    for (int64_t k : NeuronCounts(s.ffn)) {
      const std::vector<int32_t> idx = RandomNeurons(s.ffn, k, rng);
      const std::vector<float> sparse = m.Fc2(m.Fc1(idx), idx, true);
      EXPECT_TRUE(BitEqual(sparse, m.DenseMasked(idx))) << "rows " << s.rows << " d " << s.d << " ffn " << s.ffn
                                                        << " k " << k;
      // Masking really removes something (each neuron carries weight).
      if (k <= s.ffn / 3) EXPECT_FALSE(BitEqual(sparse, m.DenseMasked(RandomNeurons(s.ffn, s.ffn, rng))));
    }
  }
}

TEST_F(GatherMlpTest, RowsAreIndependentOfTheirBatchAndTheThreadCount) {
  std::mt19937 rng(4);
  const Shape s{37, 200, 1100};
  const Mlp m(s, rng);
  const std::vector<int32_t> idx = RandomNeurons(s.ffn, 517, rng);
  omp_set_num_threads(2);
  const std::vector<float> batch = m.Fc2(m.Fc1(idx), idx, true);
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (int64_t r : {int64_t{0}, int64_t{5}, s.rows - 1}) {
      // Row r alone, as a batch of one.
      Mlp alone = m;
      alone.s.rows = 1;
      alone.x.assign(m.x.begin() + r * s.d, m.x.begin() + (r + 1) * s.d);
      alone.y0.assign(m.y0.begin() + r * s.d, m.y0.begin() + (r + 1) * s.d);
      const std::vector<float> got = alone.Fc2(alone.Fc1(idx), idx, true);
      EXPECT_TRUE(BitEqual(got, std::vector<float>(batch.begin() + r * s.d, batch.begin() + (r + 1) * s.d)))
          << "row " << r << " threads " << threads;
    }
  }
}

TEST(SelectMlpNeurons, TopKOfSummedReluScoresAscendingTiesToLowerIds) {
  std::mt19937 rng(5);
  for (int64_t rows : {1, 3, 8}) {
    for (int64_t ffn : {1, 10, 300}) {
      std::vector<float> scores = Random(rows * ffn, rng);
      // Ties: round to a coarse grid so equal sums happen.
      for (float& v : scores) v = std::round(v * 2.0f) / 2.0f;
      for (int64_t k : {int64_t{0}, int64_t{1}, ffn / 2, ffn, ffn + 5}) {
        std::vector<int32_t> got(ffn, -1);
        const int64_t n = SelectMlpNeurons(scores.data(), rows, ffn, k, got.data());
        ASSERT_EQ(n, std::min(k, ffn));
        got.resize(n);
        // By the definition: sort (sum desc, id asc), keep n, ascending.
        std::vector<std::pair<float, int32_t>> sums(ffn);
        for (int32_t f = 0; f < ffn; ++f) {
          float sum = 0.0f;
          for (int64_t r = 0; r < rows; ++r) sum += std::max(scores[r * ffn + f], 0.0f);
          sums[f] = {-sum, f};
        }
        std::sort(sums.begin(), sums.end());
        std::vector<int32_t> want;
        for (int64_t i = 0; i < n; ++i) want.push_back(sums[i].second);
        std::sort(want.begin(), want.end());
        EXPECT_EQ(got, want) << "rows " << rows << " ffn " << ffn << " k " << k;
      }
    }
  }
}

TEST(SelectMlpNeurons, NanScoresRankLast) {
  // Neuron 1 would win on its sum but has a NaN score in one row.
  const std::vector<float> scores = {0.5f, 9.0f, 0.1f, -1.0f,  //
                                     0.5f, std::nanf(""), 0.1f, -1.0f};
  std::vector<int32_t> got(4);
  ASSERT_EQ(SelectMlpNeurons(scores.data(), 2, 4, 3, got.data()), 3);
  got.resize(3);
  EXPECT_EQ(got, (std::vector<int32_t>{0, 2, 3}));
}

}  // namespace
}  // namespace polar::kernels::cpu
