// Dense linear layer on the CPU through OpenBLAS (all cores).
#pragma once

#include <cstdint>

namespace polar::kernels::cpu {

// out = x · wᵀ (+ bias) (+ out when accumulate).
// x: [rows, in]; w: [out_features, in] (PyTorch Linear layout); bias: [out_features] or nullptr;
// out: [rows, out_features].
void Linear(const float* x, const float* w, const float* bias, int64_t rows, int64_t in,
            int64_t out_features, float* out, bool accumulate = false);

}  // namespace polar::kernels::cpu
