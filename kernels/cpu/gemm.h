// Dense linear layer on the CPU: a batch-invariant AVX2/FMA kernel.
//
// Why not a BLAS: a BLAS picks blockings, micro-kernels and thread splits by
// the matrix shape, so the floats of one output row change with how many
// other rows share the call. In serving, a sequence's tokens would then depend
// on what it was batched with. This kernel gives every output element one
// fixed instruction sequence, so each output row is a function of its input
// row and the weights only, bit for bit, whatever `rows` is, wherever the row
// sits in the batch, whatever the other rows hold and whatever the OpenMP
// thread count is (for a fixed binary on a fixed machine).
//
// The fixed order, for out[r, c] (n = in):
//   1. eight lane sums: lane j accumulates x[r, k] * w[c, k] for k = j, j + 8,
//      j + 16, ... in increasing k, one fused multiply-add per term (a final
//      partial chunk of n % 8 terms is read with zeros in the missing lanes);
//   2. the lanes are added as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7));
//   3. then the bias: dot + bias[c];
//   4. then, when accumulating, the old value: out[r, c] + (dot + bias[c]).
// Tiling (rows x columns per register block, column panels per thread) only
// decides which element is computed when and by which thread, never how.
// Threads split the output columns; the reduction over `in` is never split.
#pragma once

#include <cstdint>

namespace polar::kernels::cpu {

// out = x · wᵀ (+ bias) (+ out when accumulate), in the order given above.
// x: [rows, in]; w: [out_features, in] (PyTorch Linear layout); bias: [out_features] or nullptr;
// out: [rows, out_features]. Runs on the OpenMP threads (omp_get_max_threads()).
void Linear(const float* x, const float* w, const float* bias, int64_t rows, int64_t in,
            int64_t out_features, float* out, bool accumulate = false);

}  // namespace polar::kernels::cpu
