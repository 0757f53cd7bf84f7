// The optimisation pieces both router trainers use (router_training.cc for
// head routers, mlp_router_training.cc for MLP routers), kept once so the
// two train alike: AdamW, the seeded minibatch shuffle, and the per-feature
// standardisation of the training split.
//
// Everything here is deterministic and the same on every standard library:
// the shuffle is our own Fisher-Yates on std::mt19937_64 (std::shuffle's
// algorithm differs between libraries), and the sums run in a fixed order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace polar {

// AdamW (decoupled weight decay, bias-corrected moments) over one tensor.
class AdamW {
 public:
  explicit AdamW(size_t n) : m_(n, 0.0), v_(n, 0.0) {}
  // step: 1-based.
  void Update(std::vector<float>& params, const std::vector<float>& grad, double lr, double decay, int64_t step);

 private:
  std::vector<double> m_, v_;  // first and second moments, per parameter
};

// A draw in [0, bound) by multiply-shift: unbiased enough for 2^64 draws
// into at most 2^63 slots, and the same on every standard library.
int64_t DrawBelow(std::mt19937_64& rng, int64_t bound);

// Fisher-Yates over all of v with DrawBelow.
void SeededShuffle(std::vector<int64_t>& v, std::mt19937_64& rng);

// Per-feature mean and 1 / deviation of the first `rows` rows of inputs
// [rows, dim]; a constant feature gets inv_std 0 (it carries nothing a bias
// cannot). Trainers optimise on z = (x - mean) * inv_std: router inputs are
// normed hidden states times a learned gain, with feature scales orders of
// magnitude apart, and Adam moves every weight by about the same step.
struct FeatureStandardisation {
  std::vector<float> mean;     // [dim]
  std::vector<float> inv_std;  // [dim]

  // A minibatch's standardised inputs: row r of z is inputs row rows[r],
  // standardised, for r in [0, count). inputs: [*, dim]; z: [count, dim].
  void Apply(const float* inputs, const int64_t* rows, int64_t count, float* z) const;
};
FeatureStandardisation StandardiseFeatures(const float* inputs, int64_t rows, int64_t dim);

}  // namespace polar
