// MLP sparsity for ReLU models (Polar Sparsity, OPT): one set of neurons for
// the whole batch, picked from router scores, and the gather-GEMM pair that
// computes the MLP over those neurons only. CPU reference of the CUDA
// kernels; the CPU backend runs it too.
//
//   fc1: h[m, i] = ReLU(x[m] · W1[idx[i]] + b1[idx[i]])          i < k
//   fc2: y[m]   (+)= Σ_i h[m, i] · W2t[idx[i]] + b2
// W1 is fc1.weight as stored ([ffn, d], nn.Linear layout) and W2t is
// fc2.weightᵀ ([ffn, d]), both neuron-major, so a selected neuron is one
// contiguous row of each.
//
// Summation order (exactness): every output element is computed in exactly
// the order gemm.h's Linear uses, with the reduction index being d for fc1
// and the neuron id for fc2: lane j (of 8) accumulates, with one fused
// multiply-add per term in increasing index order, the terms whose index is
// j mod 8; the lanes are added as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) +
// (l3 + l7)); then the bias; then, when accumulating, the old value. Hence:
//   - each element depends only on its own input row and the weights: the
//     same whatever M, the thread count or the other rows (the neuron set
//     itself depends on the batch: see SelectMlpNeurons);
//   - with all neurons selected (k = ffn) the pair equals Linear, ReLU,
//     Linear(accumulate) bit for bit;
//   - with a subset selected it equals the dense pair with the unselected
//     neurons' activations zeroed, bit for bit: a zero activation adds an
//     exact zero to its lane (a lane sum starts at +0 and is never -0).
// Indices must be ascending and distinct (SelectMlpNeurons writes them so).
#pragma once

#include <cstdint>

namespace polar::kernels::cpu {

// The batch's neuron set: the k neurons with the largest column sums of
// ReLU(scores) (summed over the rows in row order, in fp32), ties to the lower
// neuron id, NaN scores ranking last; written ascending to indices[0, k).
// scores: [rows, ffn] router logits, one row per token; k is clamped to
// [0, ffn]. Returns the number written. One set for the batch is the
// paper's design (the batch union of active neurons), so a sequence's MLP
// depends on what it is batched with.
int64_t SelectMlpNeurons(const float* scores, int64_t rows, int64_t ffn, int64_t k, int32_t* indices);

// fc1 over the selected neurons with ReLU. x: [rows, in]; w1: [ffn, in];
// b1: [ffn]; indices: [k] ascending; h: [rows, k].
void GatherFc1Relu(const float* x, const float* w1, const float* b1, const int32_t* indices, int64_t rows,
                   int64_t in, int64_t k, float* h);

// fc2 over the same neurons. h: [rows, k]; w2t: [ffn, out]; b2: [out];
// indices: [k] ascending; y: [rows, out], overwritten or (accumulate) added to.
// k = 0 gives y = b2 (+ y).
void GatherFc2(const float* h, const float* w2t, const float* b2, const int32_t* indices, int64_t rows, int64_t k,
               int64_t out, float* y, bool accumulate);

// Zeroes, in every row, the columns of h ([rows, ffn]) not in indices[0, k):
// the dense-masked MLP the sparse one is checked against.
void MaskMlpNeurons(float* h, int64_t rows, int64_t ffn, const int32_t* indices, int64_t k);

}  // namespace polar::kernels::cpu
