// Elementwise MLP activations (CPU reference).
#pragma once

#include <cstdint>

namespace polar::kernels::cpu {

// out[r, i] = silu(gate[r, i]) * up[r, i]; gate_up: [rows, 2 * width] with the
// gate in the first half of each row, up in the second; out: [rows, width].
void SiluMul(const float* gate_up, int64_t rows, int64_t width, float* out);

// x = max(x, 0), in place. x: [n].
void Relu(float* x, int64_t n);

// a += b. a, b: [n].
void AddInPlace(float* a, const float* b, int64_t n);

}  // namespace polar::kernels::cpu
