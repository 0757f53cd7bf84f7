// Polar Sparsity's head routers on the GPU: the router scores of a batch
// (one GEMM through cuBLASLt) and the per-sequence top-k that turns them into
// the CSR lists of selected KV groups that PagedDecodeAttention takes
// (group_indptr / group_indices), written on the device so the decode step
// never waits on the host. CPU reference: kernels/cpu/head_select.h
// (SelectHeadGroups); given the same fp32 scores the lists are identical.
// Measured on the card: docs/performance-kernels.md.
//
//   scores[r, h] = x[r] · w[h] + bias[h]           fp16/bf16 in, fp32 out
//   per sequence s: group score = max or mean of its query heads' scores in
//   row score_rows[s]; keep the keep[s] best groups (ties: lower id; NaN
//   heads rank last), ascending.
//
// A dense layer (layer 0, a calibrated critical layer, a request asking for
// density 1.0) needs no scores: keep_all_groups (or keep[s] >= num_groups)
// writes every group without reading scores or score_rows.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace polar::kernels::cuda {

enum class RouterDtype : int { kFp16, kBf16 };

// Same values as kernels/cpu/head_select.h's GroupScoreReduce.
enum class GroupReduce : int32_t { kMax = 0, kMean = 1 };

// ---------------------------------------------------------------------------
// Scores: one cuBLASLt GEMM with the bias fused (its epilogue).
// ---------------------------------------------------------------------------

// Holds the cuBLASLt handle, descriptors, the algorithm chosen for each row
// count seen, and cuBLASLt's workspace: created once per layer shape at
// start, so that a step allocates nothing. Not thread-safe: one engine
// thread uses it.
struct RouterScoresPlan;

struct RouterScoresShape {
  RouterDtype dtype = RouterDtype::kFp16;  // of x and w
  int64_t hidden = 0;     // d
  int64_t num_heads = 0;  // router outputs (query heads)
};

cudaError_t CreateRouterScoresPlan(const RouterScoresShape& shape, RouterScoresPlan** plan);
void DestroyRouterScoresPlan(RouterScoresPlan* plan);

// Enqueues scores = x · wᵀ + bias on stream. Device pointers, 16-byte
// aligned: x [rows, hidden] and w [num_heads, hidden] in the plan's dtype;
// bias [num_heads] fp32 or nullptr; scores [rows, num_heads] fp32. The first
// call for a row count picks cuBLASLt's algorithm (host work only, so it may
// also happen while a graph is captured).
cudaError_t RouterScores(RouterScoresPlan* plan, const void* x, const void* w, const float* bias,
                         float* scores, int64_t rows, cudaStream_t stream);

// ---------------------------------------------------------------------------
// Top-k: per-sequence group selection into CSR lists.
// ---------------------------------------------------------------------------

struct HeadGroupTopKParams {
  const float* scores = nullptr;        // [num_rows, num_heads] router logits
  const int32_t* score_rows = nullptr;  // [num_seqs] the row that scores each sequence
  const int32_t* keep = nullptr;        // [num_seqs] groups to keep; >= num_groups: all; <= 0: none
  bool keep_all_groups = false;         // every sequence keeps every group (keep unused)
  int64_t num_seqs = 0;
  int64_t num_heads = 0;   // query heads (router outputs)
  int64_t num_groups = 0;  // KV groups, at most 2048; divides num_heads
  GroupReduce reduce = GroupReduce::kMax;
  int32_t* indptr = nullptr;   // [num_seqs + 1] out
  int32_t* indices = nullptr;  // [num_seqs * num_groups] out (capacity); ascending per sequence
};

// Enqueues the selection on stream; all pointers are device memory. Returns
// cudaErrorInvalidValue for inconsistent shapes. A group whose mean is NaN
// (its heads hold both +inf and -inf) ranks as -inf.
cudaError_t SelectHeadGroupsTopK(const HeadGroupTopKParams& p, cudaStream_t stream);

}  // namespace polar::kernels::cuda
