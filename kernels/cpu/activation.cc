// See activation.h.
#include "kernels/cpu/activation.h"

#include <cmath>

namespace polar::kernels::cpu {

void SiluMul(const float* gate_up, int64_t rows, int64_t width, float* out) {
#pragma omp parallel for schedule(static) if (rows > 4)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * 2 * width;
    const float* up = gate + width;
    float* o = out + r * width;
    for (int64_t i = 0; i < width; ++i) {
      const float g = gate[i];
      o[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }
}

void Relu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void AddInPlace(float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

}  // namespace polar::kernels::cpu
