// See gemm.h.
#include "kernels/cpu/gemm.h"

#include <cblas.h>

namespace polar::kernels::cpu {

void Linear(const float* x, const float* w, const float* bias, int64_t rows, int64_t in,
            int64_t out_features, float* out, bool accumulate) {
  float beta = accumulate ? 1.0f : 0.0f;
  if (bias != nullptr) {
    // Seed the output with the bias (added to what is there when accumulating)
    // so the GEMM adds on top of it.
    for (int64_t r = 0; r < rows; ++r) {
      float* o = out + r * out_features;
      for (int64_t c = 0; c < out_features; ++c) o[c] = accumulate ? o[c] + bias[c] : bias[c];
    }
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
              static_cast<int>(out_features), static_cast<int>(in), 1.0f, x, static_cast<int>(in), w,
              static_cast<int>(in), beta, out, static_cast<int>(out_features));
}

}  // namespace polar::kernels::cpu
