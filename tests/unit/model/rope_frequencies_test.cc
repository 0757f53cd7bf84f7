// RopeInverseFrequencies: plain, linear scaling, LLaMA-3.1 scaling, and the
// same LLaMA-3.1 scaling given the GGUF way (per-frequency factors) must give
// the same frequencies.
#include <cmath>

#include "engine/model/transformer.h"
#include "gtest/gtest.h"

namespace polar {
namespace {

ModelConfig Base() {
  ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = 500000.0f;
  return c;
}

TEST(RopeFrequenciesTest, PlainMatchesFormula) {
  const std::vector<float> f = RopeInverseFrequencies(Base());
  ASSERT_EQ(f.size(), 64u);
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(f[i], std::pow(500000.0, -2.0 * i / 128), 1e-6 * f[i] + 1e-12);
}

TEST(RopeFrequenciesTest, LinearDividesEveryFrequency) {
  ModelConfig c = Base();
  c.rope_scaling.type = RopeScalingType::kLinear;
  c.rope_scaling.factor = 4.0f;
  const std::vector<float> plain = RopeInverseFrequencies(Base()), scaled = RopeInverseFrequencies(c);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_FLOAT_EQ(scaled[i], plain[i] / 4.0f);
}

TEST(RopeFrequenciesTest, Llama3ScalingKeepsHighSlowsLowAndEqualsFactorForm) {
  ModelConfig c = Base();
  c.rope_scaling = {RopeScalingType::kLlama3, 8.0f, 1.0f, 4.0f, 8192};
  const std::vector<float> plain = RopeInverseFrequencies(Base()), scaled = RopeInverseFrequencies(c);
  EXPECT_FLOAT_EQ(scaled.front(), plain.front());       // short wavelength: kept
  EXPECT_FLOAT_EQ(scaled.back(), plain.back() / 8.0f);  // long wavelength: slowed by factor
  int between = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_LE(scaled[i], plain[i]);
    EXPECT_GE(scaled[i], plain[i] / 8.0f * (1 - 1e-6f));
    between += scaled[i] < plain[i] && scaled[i] > plain[i] / 8.0f * 1.0001f;
  }
  EXPECT_GT(between, 0) << "some frequencies are interpolated";
  ModelConfig factors = Base();
  for (size_t i = 0; i < plain.size(); ++i) factors.rope_freq_factors.push_back(plain[i] / scaled[i]);
  const std::vector<float> from_factors = RopeInverseFrequencies(factors);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_NEAR(from_factors[i], scaled[i], 1e-6f * scaled[i]);
}

}  // namespace
}  // namespace polar
