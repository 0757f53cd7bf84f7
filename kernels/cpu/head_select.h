// Per-sequence choice of the attention heads to compute, from router scores
// (Polar Sparsity's head routers). CPU reference for the CUDA router top-k;
// the CPU backend runs it too.
//
// The unit of selection is the KV group: a group selected means all of its
// query heads are computed and its K/V are read once (for MHA a group is one
// head). A router scores every query head; a group's score reduces its
// heads' scores (max or mean). Each sequence keeps its `keep[s]` best groups
// (ties: the lower group id wins; NaN scores rank last), written ascending as
// a CSR list: the format PagedAttention's group_indptr/group_indices take.
#pragma once

#include <cstdint>

namespace polar::kernels::cpu {

enum class GroupScoreReduce : int32_t { kMax = 0, kMean = 1 };

struct HeadSelectParams {
  const float* scores = nullptr;      // [num_rows, num_heads] router logits, one row per token
  const int32_t* score_rows = nullptr;  // [num_seqs] the row that scores each sequence
  const int32_t* keep = nullptr;      // [num_seqs] groups to keep; >= num_groups: all, 0: none
  int64_t num_seqs = 0;
  int64_t num_heads = 0;   // query heads (router outputs)
  int64_t num_groups = 0;  // KV heads; divides num_heads
  GroupScoreReduce reduce = GroupScoreReduce::kMax;
  int32_t* indptr = nullptr;   // [num_seqs + 1] out
  int32_t* indices = nullptr;  // [num_seqs * num_groups] out (capacity); ascending per sequence
};

void SelectHeadGroups(const HeadSelectParams& p);

// Group scores of one row: out[g] = reduce over the row's scores of group g's
// query heads (heads [g * r, (g + 1) * r), r = num_heads / num_groups).
void GroupScores(const float* row, int64_t num_heads, int64_t num_groups, GroupScoreReduce reduce, float* out);

// out[t * num_heads + h] = L2 norm of head h's slice of x[t]; the per-head
// attention-output norms that label (and, for the oracle, pick) heads.
// x: [rows, num_heads * head_dim]; out: [rows, num_heads].
void HeadNorms(const float* x, int64_t rows, int64_t num_heads, int64_t head_dim, float* out);

// Zeroes, in every row of each sequence, the heads of the KV groups not in
// its selection (CSR as in HeadSelectParams). x: [num_tokens, num_heads * head_dim];
// q_indptr: [num_seqs + 1] rows of each sequence.
void MaskHeadGroups(float* x, int64_t num_seqs, const int32_t* q_indptr, int64_t num_heads, int64_t num_groups,
                    int64_t head_dim, const int32_t* indptr, const int32_t* indices);

}  // namespace polar::kernels::cpu
