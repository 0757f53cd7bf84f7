// Normalization kernels (CPU reference): RMSNorm (LLaMA family) and LayerNorm
// (OPT), row by row, accumulating in double so the CPU result is a stable
// reference for the GPU kernels.
#pragma once

#include <cstdint>

namespace polar::kernels::cpu {

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight
// x, out: [rows, dim]; weight: [dim]. out may alias x.
void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out);

// out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * weight + bias
// x, out: [rows, dim]; weight, bias: [dim]. out may alias x.
void LayerNorm(const float* x, const float* weight, const float* bias, int64_t rows, int64_t dim,
               float eps, float* out);

}  // namespace polar::kernels::cpu
