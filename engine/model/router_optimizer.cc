// See router_optimizer.h.
#include "engine/model/router_optimizer.h"

#include <cmath>
#include <utility>

namespace polar {
namespace {

constexpr double kAdamBeta1 = 0.9;
constexpr double kAdamBeta2 = 0.999;
constexpr double kAdamEpsilon = 1e-8;

}  // namespace

void AdamW::Update(std::vector<float>& params, const std::vector<float>& grad, double lr, double decay,
                   int64_t step) {
  const double c1 = 1.0 - std::pow(kAdamBeta1, static_cast<double>(step));
  const double c2 = 1.0 - std::pow(kAdamBeta2, static_cast<double>(step));
  for (size_t i = 0; i < params.size(); ++i) {
    double p = params[i] * (1.0 - lr * decay);
    m_[i] = kAdamBeta1 * m_[i] + (1.0 - kAdamBeta1) * grad[i];
    v_[i] = kAdamBeta2 * v_[i] + (1.0 - kAdamBeta2) * static_cast<double>(grad[i]) * grad[i];
    p -= lr * (m_[i] / c1) / (std::sqrt(v_[i] / c2) + kAdamEpsilon);
    params[i] = static_cast<float>(p);
  }
}

int64_t DrawBelow(std::mt19937_64& rng, int64_t bound) {
  return static_cast<int64_t>((static_cast<unsigned __int128>(rng()) * static_cast<uint64_t>(bound)) >> 64);
}

void SeededShuffle(std::vector<int64_t>& v, std::mt19937_64& rng) {
  for (int64_t i = static_cast<int64_t>(v.size()) - 1; i > 0; --i) std::swap(v[i], v[DrawBelow(rng, i + 1)]);
}

void FeatureStandardisation::Apply(const float* inputs, const int64_t* rows, int64_t count, float* z) const {
  const int64_t dim = static_cast<int64_t>(mean.size());
  for (int64_t r = 0; r < count; ++r) {
    const float* x = inputs + rows[r] * dim;
    float* zr = z + r * dim;
    // omp simd: -O2 leaves this loop scalar (possible aliasing); lanes are
    // independent elements, so nothing is summed in another order.
#pragma omp simd
    for (int64_t k = 0; k < dim; ++k) zr[k] = (x[k] - mean[k]) * inv_std[k];
  }
}

FeatureStandardisation StandardiseFeatures(const float* inputs, int64_t rows, int64_t dim) {
  std::vector<double> mean(dim, 0.0), var(dim, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    const float* x = inputs + i * dim;
    for (int64_t k = 0; k < dim; ++k) mean[k] += x[k];
  }
  for (double& m : mean) m /= static_cast<double>(rows);
  // Two passes: the deviation from the exact mean, not E[x²] - mean², which
  // cancels badly for features with a large offset.
  for (int64_t i = 0; i < rows; ++i) {
    const float* x = inputs + i * dim;
    for (int64_t k = 0; k < dim; ++k) {
      const double dev = x[k] - mean[k];
      var[k] += dev * dev;
    }
  }
  FeatureStandardisation st{std::vector<float>(dim), std::vector<float>(dim)};
  for (int64_t k = 0; k < dim; ++k) {
    const double std_dev = std::sqrt(var[k] / static_cast<double>(rows));
    st.mean[k] = static_cast<float>(mean[k]);
    st.inv_std[k] = std_dev > 1e-12 * (1.0 + std::abs(mean[k])) ? static_cast<float>(1.0 / std_dev) : 0.0f;
  }
  return st;
}

}  // namespace polar
