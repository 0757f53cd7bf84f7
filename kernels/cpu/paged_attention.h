// Causal attention over a paged KV cache (CPU reference for the CUDA decode and
// prefill kernels; the CPU backend runs it too).
//
// The KV cache of one layer is a pool of fixed-size blocks; each sequence owns
// a list of block ids (its block table, CSR-style: block_indptr/block_ids).
// A step may carry several new query tokens per sequence (prefill chunk) or one
// (decode); the i-th of a sequence's q_len new tokens sits at position
// context_len - q_len + i and sees keys 0..position (within the sliding window).
//
// Optional head selection (Polar Sparsity): per sequence a CSR list of selected
// KV groups (group_indptr/group_indices). Only those groups are computed, all of
// their query heads, each group's K/V read once; the outputs of unselected heads
// are written as zeros. nullptr means all groups (dense).
#pragma once

#include <cstdint>

namespace polar::kernels::cpu {

struct PagedAttentionParams {
  const float* q;        // [num_tokens, num_q_heads, head_dim]
  const float* k_cache;  // [num_blocks, block_size, num_kv_heads, head_dim]
  const float* v_cache;  // [num_blocks, block_size, num_kv_heads, head_dim]
  float* out;            // [num_tokens, num_q_heads, head_dim]
  int64_t num_seqs = 0;
  int64_t num_q_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 0;
  const int32_t* q_indptr = nullptr;      // [num_seqs + 1] query rows of each sequence
  const int32_t* context_lens = nullptr;  // [num_seqs] KV length including this step's tokens
  const int32_t* block_indptr = nullptr;  // [num_seqs + 1]
  const int32_t* block_ids = nullptr;     // [block_indptr[num_seqs]]
  float scale = 1.0f;                     // usually 1/sqrt(head_dim)
  int64_t sliding_window = 0;             // 0 = unlimited
  const int32_t* group_indptr = nullptr;   // [num_seqs + 1] or nullptr (all groups)
  const int32_t* group_indices = nullptr;  // selected KV group ids, ascending per sequence
};

void PagedAttention(const PagedAttentionParams& p);

// Writes K/V rows of new tokens into their cache slots
// (slot = block_id * block_size + offset).
// k, v: [num_tokens, num_kv_heads, head_dim]; slots: [num_tokens].
void AppendKv(const float* k, const float* v, const int64_t* slots, int64_t num_tokens,
              int64_t kv_row_elems, float* k_cache, float* v_cache);

}  // namespace polar::kernels::cpu
