// Norms, RoPE, activations and the OpenBLAS linear layer against direct
// double-precision formulas on random inputs.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"

namespace polar::kernels::cpu {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(NormTest, RmsNormAndLayerNorm) {
  const int rows = 7, dim = 96;
  auto x = Random(rows * dim, 1, 3.0f), w = Random(dim, 2), b = Random(dim, 3);
  std::vector<float> rms(rows * dim), ln(rows * dim);
  RmsNorm(x.data(), w.data(), rows, dim, 1e-5f, rms.data());
  LayerNorm(x.data(), w.data(), b.data(), rows, dim, 1e-5f, ln.data());
  for (int r = 0; r < rows; ++r) {
    double ss = 0, mean = 0, var = 0;
    for (int i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i], mean += x[r * dim + i];
    mean /= dim;
    for (int i = 0; i < dim; ++i) var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
    var /= dim;
    for (int i = 0; i < dim; ++i) {
      EXPECT_NEAR(rms[r * dim + i], x[r * dim + i] / std::sqrt(ss / dim + 1e-5) * w[i], 1e-5);
      EXPECT_NEAR(ln[r * dim + i], (x[r * dim + i] - mean) / std::sqrt(var + 1e-5) * w[i] + b[i], 1e-5);
    }
  }
  // In place gives the same result.
  std::vector<float> in_place = x;
  RmsNorm(in_place.data(), w.data(), rows, dim, 1e-5f, in_place.data());
  EXPECT_EQ(in_place, rms);
}

TEST(RopeTest, RotateHalfPairsAndPreservesNorm) {
  const int tokens = 5, heads = 3, head_dim = 16, rot = 16;
  auto x = Random(tokens * heads * head_dim, 4);
  std::vector<float> y = x;
  std::vector<float> inv_freq(rot / 2);
  for (int i = 0; i < rot / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / rot);
  const int32_t positions[tokens] = {0, 1, 7, 100, 4095};
  ApplyRope(y.data(), positions, tokens, heads, head_dim, rot, inv_freq.data());
  for (int t = 0; t < tokens; ++t) {
    for (int h = 0; h < heads; ++h) {
      const float* a = &x[(t * heads + h) * head_dim];
      const float* b = &y[(t * heads + h) * head_dim];
      for (int i = 0; i < rot / 2; ++i) {
        const double angle = double(positions[t]) * inv_freq[i];
        EXPECT_NEAR(b[i], a[i] * std::cos(angle) - a[i + rot / 2] * std::sin(angle), 2e-4);
        EXPECT_NEAR(b[i + rot / 2], a[i + rot / 2] * std::cos(angle) + a[i] * std::sin(angle), 2e-4);
      }
    }
  }
}

TEST(ActivationTest, SiluMulReluAdd) {
  const int rows = 3, width = 10;
  auto gu = Random(rows * 2 * width, 5, 2.0f);
  std::vector<float> out(rows * width);
  SiluMul(gu.data(), rows, width, out.data());
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < width; ++i) {
      const double g = gu[r * 2 * width + i], u = gu[r * 2 * width + width + i];
      EXPECT_NEAR(out[r * width + i], g / (1 + std::exp(-g)) * u, 1e-5);
    }
  }
  auto x = Random(50, 6);
  auto y = x;
  Relu(y.data(), 50);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(y[i], std::max(x[i], 0.0f));
  auto z = x;
  AddInPlace(z.data(), y.data(), 50);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(z[i], x[i] + y[i]);
}

TEST(GemmTest, LinearWithBiasAndAccumulate) {
  const int rows = 5, in = 33, out_f = 17;
  auto x = Random(rows * in, 7), w = Random(out_f * in, 8), b = Random(out_f, 9);
  auto base = Random(rows * out_f, 10);
  std::vector<float> plain(rows * out_f), biased(rows * out_f), acc = base;
  Linear(x.data(), w.data(), nullptr, rows, in, out_f, plain.data());
  Linear(x.data(), w.data(), b.data(), rows, in, out_f, biased.data());
  Linear(x.data(), w.data(), b.data(), rows, in, out_f, acc.data(), /*accumulate=*/true);
  for (int r = 0; r < rows; ++r) {
    for (int o = 0; o < out_f; ++o) {
      double dot = 0;
      for (int i = 0; i < in; ++i) dot += double(x[r * in + i]) * w[o * in + i];
      EXPECT_NEAR(plain[r * out_f + o], dot, 1e-4);
      EXPECT_NEAR(biased[r * out_f + o], dot + b[o], 1e-4);
      EXPECT_NEAR(acc[r * out_f + o], dot + b[o] + base[r * out_f + o], 1e-4);
    }
  }
}

}  // namespace
}  // namespace polar::kernels::cpu
