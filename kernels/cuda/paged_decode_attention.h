// Selective paged decode attention on the GPU (Polar Sparsity's attention
// kernel). CPU reference: kernels/cpu/paged_attention.h, same cache layout
// (kNHD) and same selection lists, restricted to decode (one query row per
// sequence). Measured against PyTorch and the card: docs/performance-kernels.md.
//
// Per sequence a CSR list of selected KV groups (group_indptr/group_indices;
// nullptr = all groups, i.e. dense). Only the selected groups' K/V blocks are
// read, each once for all of the group's query heads; unselected heads'
// outputs are written as zeros. Sequences of different lengths and different
// numbers of selected groups share one launch.
//
// Work split (decided on the device, so nothing waits on the host): the
// selected (sequence, group) pairs are cut into tiles of 16 keys, laid end to
// end, and every warp of a persistent grid takes an equal contiguous run of
// tiles. A pair that one warp covers entirely is written directly; a pair
// spread over several warps leaves fp32 partials (output + log-sum-exp) in the
// workspace, which a second small kernel merges. So sparse work costs in
// proportion to the tiles selected, and long contexts spread over the chip.
//
// No allocation and no host synchronisation inside the launch: the caller
// sizes the workspace once with PagedDecodeAttentionWorkspaceBytes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace polar::kernels::cuda {

enum class AttentionDtype : int { kFp16, kBf16 };

// Order of one cache block's elements. kNHD is the engine's layout (every
// head of a token together); kHND keeps each head's block_size rows together.
enum class KvLayout : int { kNHD, kHND };

struct PagedDecodeAttentionParams {
  AttentionDtype dtype = AttentionDtype::kFp16;  // of q, k_cache, v_cache and out
  const void* q = nullptr;        // [num_seqs, num_q_heads, head_dim]
  const void* k_cache = nullptr;  // kNHD: [num_blocks, block_size, num_kv_heads, head_dim]
  const void* v_cache = nullptr;  // kHND: [num_blocks, num_kv_heads, block_size, head_dim]
  KvLayout kv_layout = KvLayout::kNHD;
  void* out = nullptr;            // [num_seqs, num_q_heads, head_dim]
  int64_t num_seqs = 0;
  int64_t num_q_heads = 0;   // a multiple of num_kv_heads, at most 16 per KV group
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;      // 64 or 128
  int64_t block_size = 0;    // any
  // All index arrays live in device memory.
  const int32_t* context_lens = nullptr;  // [num_seqs] KV length including this step's token
  const int32_t* block_indptr = nullptr;  // [num_seqs + 1]
  const int32_t* block_ids = nullptr;     // [block_indptr[num_seqs]]
  float scale = 1.0f;                     // usually 1/sqrt(head_dim)
  int64_t sliding_window = 0;             // 0 = unlimited
  const int32_t* group_indptr = nullptr;   // [num_seqs + 1] or nullptr (all groups)
  const int32_t* group_indices = nullptr;  // selected KV group ids, distinct per sequence
};

// Bytes of device workspace a launch with these shapes needs (grows with
// num_seqs; depends on the current device's multiprocessor count). Reads only
// the shape fields of p.
cudaError_t PagedDecodeAttentionWorkspaceBytes(const PagedDecodeAttentionParams& p,
                                               size_t* bytes);

// Enqueues the attention on stream. workspace: device memory of at least the
// size above, 256-byte aligned, contents irrelevant. Returns
// cudaErrorInvalidValue for unsupported shapes or a small workspace. All
// pointers 16-byte aligned.
cudaError_t PagedDecodeAttention(const PagedDecodeAttentionParams& p, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream);

}  // namespace polar::kernels::cuda
