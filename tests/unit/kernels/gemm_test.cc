// Linear (kernels/cpu/gemm.h): values against a double-precision reference,
// and batch invariance: an output row is bit-identical whatever else shares
// the call (how many rows, which rows, in which order) and whatever the OpenMP
// thread count. Shapes are chosen to hit every register tile, the remainder
// tiles in rows and columns, a partial last chunk of `in`, and several column
// panels per thread.
#include "kernels/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace polar::kernels::cpu {
namespace {

struct Shape {
  int64_t rows, in, out;
};

class GemmTest : public RestoresOmpThreadsTest {};

// out[r, c] (+ bias, + old out) in double; `magnitude` gets the sum of the
// absolute values of the terms, which bounds the fp32 rounding error.
void Reference(const std::vector<float>& x, const std::vector<float>& w, const float* bias,
               const std::vector<float>& old_out, bool accumulate, const Shape& s, std::vector<double>& ref,
               std::vector<double>& magnitude) {
  ref.assign(s.rows * s.out, 0.0);
  magnitude.assign(s.rows * s.out, 0.0);
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int64_t c = 0; c < s.out; ++c) {
      double sum = 0, mag = 0;
      for (int64_t k = 0; k < s.in; ++k) {
        const double term = double(x[r * s.in + k]) * w[c * s.in + k];
        sum += term;
        mag += std::fabs(term);
      }
      if (bias != nullptr) sum += bias[c], mag += std::fabs(bias[c]);
      if (accumulate) sum += old_out[r * s.out + c], mag += std::fabs(old_out[r * s.out + c]);
      ref[r * s.out + c] = sum;
      magnitude[r * s.out + c] = mag;
    }
  }
}

TEST_F(GemmTest, MatchesDoubleReference) {
  std::mt19937 rng(1);
  const Shape shapes[] = {{1, 1, 1},    {1, 577, 7},   {2, 8, 9},     {3, 9, 13},    {4, 15, 3},   {5, 16, 25},
                          {7, 577, 7},  {13, 64, 31},  {33, 576, 48}, {70, 577, 7},  {70, 130, 67}, {9, 1536, 50},
                          {6, 576, 1000}};
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    for (const Shape& s : shapes) {
      const std::vector<float> x = Random(s.rows * s.in, rng), w = Random(s.out * s.in, rng), bias = Random(s.out, rng);
      const std::vector<float> old_out = Random(s.rows * s.out, rng);
      for (bool with_bias : {false, true}) {
        for (bool accumulate : {false, true}) {
          SCOPED_TRACE(testing::Message() << "rows " << s.rows << " in " << s.in << " out " << s.out << " bias "
                                          << with_bias << " accumulate " << accumulate << " threads " << threads);
          std::vector<float> out = old_out;
          Linear(x.data(), w.data(), with_bias ? bias.data() : nullptr, s.rows, s.in, s.out, out.data(), accumulate);
          std::vector<double> ref, magnitude;
          Reference(x, w, with_bias ? bias.data() : nullptr, old_out, accumulate, s, ref, magnitude);
          // fp32 rounding of ~in/8 + 5 sequential adds, each at most 2^-24 of the running magnitude.
          const double eps = (s.in / 8.0 + 6) * std::ldexp(1.0, -24);
          int bad = 0;
          for (size_t i = 0; i < out.size(); ++i) {
            if (std::fabs(out[i] - ref[i]) > eps * magnitude[i] + 1e-30 && ++bad <= 5) {
              ADD_FAILURE() << "element " << i << ": " << out[i] << " vs " << ref[i];
            }
          }
          EXPECT_EQ(bad, 0);
        }
      }
    }
  }
}

TEST_F(GemmTest, NoReductionLeavesBiasAndAccumulates) {
  std::mt19937 rng(2);
  const std::vector<float> bias = Random(5, rng), old_out = Random(3 * 5, rng);
  std::vector<float> out = Random(3 * 5, rng);
  Linear(nullptr, nullptr, bias.data(), 3, 0, 5, out.data());
  for (int i = 0; i < 15; ++i) EXPECT_EQ(out[i], bias[i % 5]);
  out = old_out;
  Linear(nullptr, nullptr, bias.data(), 3, 0, 5, out.data(), /*accumulate=*/true);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(out[i], old_out[i] + (0.0f + bias[i % 5]));
}

// One output row of some batch against the same row of another, bit for bit.
void ExpectRowEqual(const float* got, const float* want, int64_t out_features, const char* what, int64_t row) {
  EXPECT_EQ(std::memcmp(got, want, sizeof(float) * out_features), 0) << what << ", row " << row;
}

TEST_F(GemmTest, EachRowIsIndependentOfTheBatchAndThreads) {
  std::mt19937 rng(3);
  // Remainder tiles: 70 rows = 17 tiles of 4 + 2; out 7, 67, 131, 1000 leave
  // 1, 1, 2, 1 columns over whole 3-column tiles (and other remainders for the
  // 1-, 2- and 3-row shapes); 1000 x 576 spans several panels per thread.
  const Shape shapes[] = {{70, 577, 7}, {70, 64, 67}, {37, 130, 131}, {19, 576, 1000}, {11, 3, 17}};
  for (const Shape& s : shapes) {
    const std::vector<float> x = Random(s.rows * s.in, rng), w = Random(s.out * s.in, rng), bias = Random(s.out, rng);
    const std::vector<float> old_out = Random(s.rows * s.out, rng);
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(testing::Message() << "rows " << s.rows << " in " << s.in << " out " << s.out << " accumulate "
                                      << accumulate);
      auto run = [&](const std::vector<float>& bx, std::vector<float> bout, int64_t rows) {
        Linear(bx.data(), w.data(), bias.data(), rows, s.in, s.out, bout.data(), accumulate);
        return bout;
      };
      omp_set_num_threads(2);
      const std::vector<float> full = run(x, old_out, s.rows);

      for (int threads : {1, 3, 4}) {
        omp_set_num_threads(threads);
        const std::vector<float> again = run(x, old_out, s.rows);
        EXPECT_EQ(std::memcmp(again.data(), full.data(), sizeof(float) * full.size()), 0) << threads << " threads";
      }

      omp_set_num_threads(2);
      for (int64_t r = 0; r < s.rows; ++r) {
        const std::vector<float> one_x(x.begin() + r * s.in, x.begin() + (r + 1) * s.in);
        const std::vector<float> one_out(old_out.begin() + r * s.out, old_out.begin() + (r + 1) * s.out);
        ExpectRowEqual(run(one_x, one_out, 1).data(), &full[r * s.out], s.out, "alone", r);
      }

      // Sub-batches: a random subset of the rows in random order, mixed with
      // fresh random rows at random positions, under 1 to 3 threads.
      for (int trial = 0; trial < 12; ++trial) {
        omp_set_num_threads(1 + trial % 3);
        std::vector<int64_t> rows(s.rows);
        std::iota(rows.begin(), rows.end(), 0);
        std::shuffle(rows.begin(), rows.end(), rng);
        rows.resize(std::uniform_int_distribution<int64_t>(1, s.rows)(rng));
        const int64_t fillers = std::uniform_int_distribution<int64_t>(0, 9)(rng);
        const int64_t batch_rows = static_cast<int64_t>(rows.size()) + fillers;
        std::vector<float> bx = Random(batch_rows * s.in, rng), bout = Random(batch_rows * s.out, rng);
        std::vector<int64_t> slots(batch_rows);
        std::iota(slots.begin(), slots.end(), 0);
        std::shuffle(slots.begin(), slots.end(), rng);
        for (size_t i = 0; i < rows.size(); ++i) {
          std::copy_n(&x[rows[i] * s.in], s.in, &bx[slots[i] * s.in]);
          std::copy_n(&old_out[rows[i] * s.out], s.out, &bout[slots[i] * s.out]);
        }
        const std::vector<float> got = run(bx, bout, batch_rows);
        for (size_t i = 0; i < rows.size(); ++i) {
          ExpectRowEqual(&got[slots[i] * s.out], &full[rows[i] * s.out], s.out, "sub-batch", rows[i]);
        }
      }
    }
  }
}

// Every register tile shape and remainder: rows 1..9 (1-, 2-, 3- and 4-row
// main tiles and their leftovers), out 1..17 (partial column tiles of every
// width), `in` around multiples of the vector width. Each row of every call
// must equal that row computed alone.
TEST_F(GemmTest, AllTileShapesAgreeWithSingleRows) {
  std::mt19937 rng(4);
  omp_set_num_threads(2);
  for (int64_t in : {1, 7, 8, 9, 23, 40}) {
    for (int64_t out = 1; out <= 17; ++out) {
      const std::vector<float> w = Random(out * in, rng), bias = Random(out, rng);
      const std::vector<float> x = Random(9 * in, rng);
      std::vector<std::vector<float>> alone(9);
      for (int64_t r = 0; r < 9; ++r) {
        alone[r].resize(out);
        Linear(&x[r * in], w.data(), bias.data(), 1, in, out, alone[r].data());
      }
      for (int64_t rows = 2; rows <= 9; ++rows) {
        std::vector<float> got(rows * out);
        Linear(x.data(), w.data(), bias.data(), rows, in, out, got.data());
        for (int64_t r = 0; r < rows; ++r) {
          EXPECT_EQ(std::memcmp(&got[r * out], alone[r].data(), sizeof(float) * out), 0)
              << "in " << in << " out " << out << " rows " << rows << " row " << r;
        }
      }
    }
  }
}

}  // namespace
}  // namespace polar::kernels::cpu
