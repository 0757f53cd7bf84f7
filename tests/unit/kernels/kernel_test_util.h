// Shared by the tests of the batch-invariant CPU kernels (gemm_test.cc,
// gather_mlp_test.cc): random inputs, and a fixture for tests that vary the
// OpenMP thread count (to show a result does not depend on it) and must not
// leave the changed count to the tests after them.
#pragma once

#include <omp.h>

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace polar::kernels::cpu {

// n floats from N(0, 1).
inline std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = normal(rng);
  return v;
}

// Restores the OpenMP thread count a test changes.
class RestoresOmpThreadsTest : public ::testing::Test {
 protected:
  void SetUp() override { saved_threads_ = omp_get_max_threads(); }
  void TearDown() override { omp_set_num_threads(saved_threads_); }

 private:
  int saved_threads_ = 1;
};

}  // namespace polar::kernels::cpu
