// See rope.h.
#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

namespace polar::kernels::cpu {

void ApplyRope(float* x, const int32_t* positions, int64_t num_tokens, int64_t num_heads,
               int64_t head_dim, int64_t rotary_dim, const float* inv_freq) {
  const int64_t half = rotary_dim / 2;
#pragma omp parallel for schedule(static) if (num_tokens > 4)
  for (int64_t t = 0; t < num_tokens; ++t) {
    // The angle is formed in fp32 as the reference implementations do
    // (position * inv_freq), then cos/sin are taken of that fp32 angle.
    std::vector<float> cos_v(half), sin_v(half);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      cos_v[i] = std::cos(angle);
      sin_v[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < num_heads; ++h) {
      float* v = x + (t * num_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_v[i] - b * sin_v[i];
        v[i + half] = b * cos_v[i] + a * sin_v[i];
      }
    }
  }
}

}  // namespace polar::kernels::cpu
