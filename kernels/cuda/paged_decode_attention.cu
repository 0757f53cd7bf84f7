// Selective paged decode attention: see paged_decode_attention.h for what and
// why. How, in short:
//
//  - Work: every selected (sequence, KV group) pair is a run of 16-key tiles;
//    the runs are laid end to end (a per-sequence prefix sum that each CTA
//    computes in shared memory) and every warp of the persistent grid takes an
//    equal contiguous slice ("stream-K" over tiles). Balance does not depend on
//    the lengths or densities in the batch, and warps never wait on each other.
//  - Each warp runs its own cp.async pipeline (kStages tiles in flight) across
//    pair boundaries: a tile brings 16 keys of K and V for one KV group, and
//    the group's query rows when it is the first tile of a pair in the slice.
//  - Math on tensor cores (mma.sync m16n8k16, fp32 accumulate): the group's
//    query heads are the 16 rows of M (GQA 8 uses half, MHA one row: the card
//    has far more matrix throughput than this memory-bound kernel needs), so
//    each K/V tile is read from memory once for all heads of its group.
//    Online softmax in fp32 in the exp2 domain, P rounded to the input type
//    for the P·V product as flash attention does.
//  - A pair inside one warp's slice is normalised and written directly; a pair
//    spread over several warps leaves normalised fp32 partials and their
//    log2-sum-exp in the workspace (two slots per warp: the piece a slice
//    starts inside, the piece it ends inside), merged by MergePartialsKernel,
//    which also writes the zeros of unselected heads.
//  - Both kernels are launched as programmatic dependents (Hopper): each is
//    resident before its predecessor ends and waits in griddepcontrol.wait,
//    so the fixed cost of a launch stays a few microseconds (it decides the
//    sparse speed-up of small batches; docs/performance-kernels.md).
//
// Shared memory tiles are swizzled (16-byte chunk index XOR row % 8) so the
// ldmatrix reads of 8 rows hit 8 different bank groups.
#include "kernels/cuda/paged_decode_attention.h"
#include "kernels/cuda/warp_mma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <cstdint>
#include <mutex>
#include <type_traits>

namespace polar::kernels::cuda {
namespace {

using namespace warp;  // Swizzled, CopyAsync16, LoadMatrix*, Mma, WaitForPredecessor (warp_mma.cuh)

constexpr int kWarps = 4;           // per CTA; independent pipelines
constexpr int kTileKeys = 16;       // keys per tile: the K extent of one P·V mma
constexpr int kStages = 4;          // tiles per warp in shared memory (3 loading, 1 computed)
constexpr int kMaxGroup = 16;       // query heads per KV group: the mma's M
constexpr int kMinTilesPerWarp = 8; // below this, partial traffic outweighs parallelism
constexpr int kPlanReserveBytes = 4096;  // room for the prefix sum when sizing the grid

// ---------------------------------------------------------------------------
// Shapes and small device helpers
// ---------------------------------------------------------------------------

template <int kHeadDim, int kQRows>
struct TileShape {
  static constexpr int kChunksPerRow = kHeadDim / 8;        // 16-byte chunks of a K/V/q row
  static constexpr int kRowsPerCopy = 32 / kChunksPerRow;   // rows one warp-wide copy covers
  static constexpr int kKvBytes = kTileKeys * kHeadDim * 2; // one K (or V) tile
  static constexpr int kQBytes = kQRows * kHeadDim * 2;
  static constexpr int kStageBytes = 2 * kKvBytes + kQBytes;  // K tile, V tile, q rows
  static constexpr int kWarpBytes = kStages * kStageBytes;
  static constexpr int kCtaBytes = kWarps * kWarpBytes;
};

// Two floats as one packed pair of T, the first in the low half.
template <typename T>
__device__ __forceinline__ uint32_t PackPair(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __nv_bfloat162 b = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&b);
  }
}

// 2^x; exp2(-inf) = +0, which the online softmax relies on.
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// ---------------------------------------------------------------------------
// Launch arguments and the per-sequence view both kernels share
// ---------------------------------------------------------------------------

template <typename T>
struct KernelArgs {
  const T* q;        // [num_seqs, num_q_heads, head_dim]
  const T* k_cache;  // [num_blocks, ...]: element (block, row, head, 0) at the strides below
  const T* v_cache;  // same layout as k_cache
  T* out;            // [num_seqs, num_q_heads, head_dim]
  const int32_t* context_lens;   // [num_seqs]
  const int32_t* block_indptr;   // [num_seqs + 1]
  const int32_t* block_ids;      // [block_indptr[num_seqs]]
  const int32_t* group_indptr;   // [num_seqs + 1] or nullptr (all groups)
  const int32_t* group_indices;  // [group_indptr[num_seqs]]
  int num_seqs, num_q_heads, num_kv_heads, group, block_size, sliding_window;
  int64_t stride_block, stride_row, stride_head;  // elements; the layout (NHD or HND)
  float scale_log2;       // softmax scale * log2(e): scores live in the exp2 domain
  // Workspace, written by the attention kernel, read by the merge kernel.
  int* tiles_per_warp;   // [1]
  int* tile_begin;       // [num_seqs + 1] first global tile of each sequence
  float* partial_lse;    // [2 * total_warps, group] log2-sum-exp of each partial
  float* partial_out;    // [2 * total_warps, group, head_dim] normalised partial outputs
};

struct SeqSpan {
  int key_begin, key_end;  // keys the query attends (sliding window applied)
  int num_tiles;           // tiles of one pair
  int num_pairs;           // selected KV groups
  int pair_base;           // offset of the selection in group_indices
  int block_base;          // offset of the block table in block_ids
};

template <typename T>
__device__ __forceinline__ SeqSpan LoadSeqSpan(const KernelArgs<T>& a, int seq) {
  SeqSpan s;
  s.key_end = max(0, a.context_lens[seq]);
  s.key_begin = a.sliding_window > 0 ? max(0, s.key_end - a.sliding_window) : 0;
  s.num_tiles = (s.key_end - s.key_begin + kTileKeys - 1) / kTileKeys;
  if (a.group_indptr != nullptr) {
    s.pair_base = a.group_indptr[seq];
    s.num_pairs = a.group_indptr[seq + 1] - s.pair_base;
  } else {
    s.pair_base = 0;
    s.num_pairs = a.num_kv_heads;
  }
  s.block_base = a.block_indptr[seq];
  return s;
}

template <typename T>
__device__ __forceinline__ int KvHeadOf(const KernelArgs<T>& a, const SeqSpan& s, int pair) {
  return a.group_indptr != nullptr ? a.group_indices[s.pair_base + pair] : pair;
}

// Exclusive prefix sum of tiles per sequence into tile_begin (shared memory,
// [num_seqs + 1]); returns the total. Every thread of the CTA calls it.
template <typename T>
__device__ int PlanTiles(const KernelArgs<T>& a, int* tile_begin) {
  __shared__ int warp_totals[kWarps];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  int carry = 0;  // the same in every thread
  for (int base = 0; base < a.num_seqs; base += blockDim.x) {
    const int seq = base + static_cast<int>(threadIdx.x);
    int tiles = 0;
    if (seq < a.num_seqs) {
      const SeqSpan s = LoadSeqSpan(a, seq);
      tiles = s.num_tiles * s.num_pairs;
    }
    int inclusive = tiles;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, inclusive, offset);
      if (lane >= offset) inclusive += v;
    }
    if (lane == 31) warp_totals[warp] = inclusive;
    __syncthreads();
    int before = carry;
    for (int w = 0; w < warp; ++w) before += warp_totals[w];
    if (seq < a.num_seqs) tile_begin[seq] = before + inclusive - tiles;
    for (int w = 0; w < kWarps; ++w) carry += warp_totals[w];
    __syncthreads();  // warp_totals is rewritten by the next round
  }
  if (threadIdx.x == 0) tile_begin[a.num_seqs] = carry;
  __syncthreads();
  return carry;
}

// Where one global tile lies: sequence, pair within the sequence, tile within the pair.
struct TileCursor {
  int index;  // global tile index
  int seq, pair, tile, kv_head;
  SeqSpan span;
};

template <typename T>
__device__ TileCursor CursorAt(const KernelArgs<T>& a, const int* tile_begin, int index) {
  // The last sequence starting at or before index; it has tiles because the
  // next one starts after index.
  int lo = 0, hi = a.num_seqs;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (tile_begin[mid] <= index) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  TileCursor c;
  c.index = index;
  c.seq = lo;
  c.span = LoadSeqSpan(a, lo);
  const int local = index - tile_begin[lo];
  c.pair = local / c.span.num_tiles;
  c.tile = local % c.span.num_tiles;
  c.kv_head = KvHeadOf(a, c.span, c.pair);
  return c;
}

// Steps to the next global tile; the caller guarantees one exists.
template <typename T>
__device__ __forceinline__ void Advance(const KernelArgs<T>& a, TileCursor& c) {
  ++c.index;
  if (++c.tile < c.span.num_tiles) return;
  c.tile = 0;
  if (++c.pair >= c.span.num_pairs) {
    c.pair = 0;
    do {
      ++c.seq;
      c.span = LoadSeqSpan(a, c.seq);
    } while (c.span.num_tiles * c.span.num_pairs == 0);
  }
  c.kv_head = KvHeadOf(a, c.span, c.pair);
}

// Element offset of key (lane % 16) of the cursor's tile in the cache, head
// 0, or -1 past the end. Loaded ahead of its use so that the block-table read
// overlaps other work.
template <typename T>
__device__ __forceinline__ int64_t RowOffsetOf(const KernelArgs<T>& a, const TileCursor& c, int lane) {
  const int key = c.span.key_begin + c.tile * kTileKeys + (lane & (kTileKeys - 1));
  if (key >= c.span.key_end) return -1;
  const int block = a.block_ids[c.span.block_base + key / a.block_size];
  return block * a.stride_block + (key % a.block_size) * a.stride_row;
}

// Starts the copies of one tile (K, V, and the group's q rows when load_q)
// into the stage at shared address stage.
template <typename T, int kHeadDim, int kQRows>
__device__ __forceinline__ void IssueTile(const KernelArgs<T>& a, const TileCursor& c,
                                          int64_t row_offset, uint32_t stage, bool load_q, int lane) {
  using Shape = TileShape<kHeadDim, kQRows>;
  const int64_t head_offset = c.kv_head * a.stride_head;
  const T* k_head = a.k_cache + head_offset;
  const T* v_head = a.v_cache + head_offset;
  const int chunk = lane % Shape::kChunksPerRow;
#pragma unroll
  for (int i = 0; i < kTileKeys / Shape::kRowsPerCopy; ++i) {
    const int row = i * Shape::kRowsPerCopy + lane / Shape::kChunksPerRow;
    const int64_t row_start = __shfl_sync(0xffffffffu, row_offset, row);
    const bool valid = row_start >= 0;
    const int64_t offset = valid ? row_start + chunk * 8 : 0;
    const uint32_t dst = stage + Swizzled(row, chunk, Shape::kChunksPerRow);
    CopyAsync16(dst, k_head + offset, valid);
    CopyAsync16(dst + Shape::kKvBytes, v_head + offset, valid);
  }
  if (load_q) {
    const T* q_group = a.q + (static_cast<int64_t>(c.seq) * a.num_q_heads +
                              static_cast<int64_t>(c.kv_head) * a.group) * kHeadDim;
    const uint32_t q_stage = stage + 2 * Shape::kKvBytes;
#pragma unroll
    for (int i = lane; i < kQRows * Shape::kChunksPerRow; i += 32) {
      const int row = i / Shape::kChunksPerRow;
      const int q_chunk = i % Shape::kChunksPerRow;
      const bool valid = row < a.group;  // padding rows become zeros
      CopyAsync16(q_stage + Swizzled(row, q_chunk, Shape::kChunksPerRow),
                  q_group + (valid ? row * kHeadDim + q_chunk * 8 : 0), valid);
    }
  }
}

// ---------------------------------------------------------------------------
// The attention kernel
// ---------------------------------------------------------------------------

// Fragment layout of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16x16): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16x8):  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C (16x8):  c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// S = q·Kᵀ: A = q rows (heads), B = K rows as stored; O = P·V: A = P (the C
// fragment of S repacked), B = V through ldmatrix.trans.
template <typename T, int kHeadDim, int kQRows>
__global__ void __launch_bounds__(kWarps * 32, 1)
    PagedDecodeAttentionKernel(const __grid_constant__ KernelArgs<T> a) {
  using Shape = TileShape<kHeadDim, kQRows>;
  constexpr int kChunks = Shape::kChunksPerRow;
  constexpr int kSteps = kHeadDim / 16;  // k-steps of q·Kᵀ, and 16-wide column pairs of P·V
  extern __shared__ __align__(128) uint8_t smem[];
  int* tile_begin = reinterpret_cast<int*>(smem + Shape::kCtaBytes);  // [num_seqs + 1]

  // Launched as a programmatic dependent of whatever kernel came before (so
  // the CTAs are resident early): nothing is read before that kernel is done.
  WaitForPredecessor();
  // The merge kernel may start its independent part (zeros) right away; it
  // waits for this grid's results with griddepcontrol.wait.
  LetDependentsStart();
  const int total_tiles = PlanTiles(a, tile_begin);
  const int total_warps = static_cast<int>(gridDim.x) * kWarps;
  const int share = max(kMinTilesPerWarp, (total_tiles + total_warps - 1) / total_warps);
  if (blockIdx.x == 0) {  // for the merge kernel
    for (int i = threadIdx.x; i <= a.num_seqs; i += blockDim.x) a.tile_begin[i] = tile_begin[i];
    if (threadIdx.x == 0) *a.tiles_per_warp = share;
  }

  const int lane = threadIdx.x & 31;
  const int warp_id = static_cast<int>(blockIdx.x) * kWarps + static_cast<int>(threadIdx.x >> 5);
  const int64_t first64 = static_cast<int64_t>(warp_id) * share;
  if (first64 >= total_tiles) return;  // no __syncthreads below this point
  const int first_tile = static_cast<int>(first64);
  const int num_tiles = min(share, total_tiles - first_tile);
  const uint32_t warp_stages =
      static_cast<uint32_t>(__cvta_generic_to_shared(smem)) + (threadIdx.x >> 5) * Shape::kWarpBytes;
  auto stage_of = [&](int i) { return warp_stages + (i % kStages) * Shape::kStageBytes; };

  // Producer: fill the first kStages - 1 stages, their block-table reads in
  // flight together.
  const TileCursor consumer_start = CursorAt(a, tile_begin, first_tile);
  TileCursor consumer = consumer_start;
  TileCursor producer = consumer_start;
  TileCursor first[kStages - 1];
  int64_t first_rows[kStages - 1];
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i > 0 && i < num_tiles) Advance(a, producer);
    first[i] = producer;
    first_rows[i] = i < num_tiles ? RowOffsetOf(a, producer, lane) : -1;
  }
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < num_tiles) {
      IssueTile<T, kHeadDim, kQRows>(a, first[i], first_rows[i], stage_of(i),
                                     i == 0 || first[i].tile == 0, lane);
    }
    CommitCopies();
  }
  int64_t next_rows = -1;
  if (kStages - 1 < num_tiles) {
    Advance(a, producer);
    next_rows = RowOffsetOf(a, producer, lane);
  }

  const int g = lane >> 2;
  const int t = lane & 3;
  const int mi = lane >> 3;  // which of ldmatrix.x4's four 8x8 matrices this lane addresses
  uint32_t qa[kSteps][4];    // q rows as A fragments, one set per k-step
  float o[kHeadDim / 8][4];  // output accumulators: rows g and g+8, 8 columns per tile
  float m[2], l[2];          // running max (exp2 domain) and this lane's share of the sum

  for (int i = 0; i < num_tiles; ++i) {
    WaitCopies<kStages - 2>();
    __syncwarp();  // every lane's copies of tile i have landed; stage i-1 is free
    if (i + kStages - 1 < num_tiles) {
      const int ahead = i + kStages - 1;
      IssueTile<T, kHeadDim, kQRows>(a, producer, next_rows, stage_of(ahead), producer.tile == 0,
                                     lane);
      if (ahead + 1 < num_tiles) {
        Advance(a, producer);
        next_rows = RowOffsetOf(a, producer, lane);
      }
    }
    CommitCopies();  // possibly empty: keeps the group count uniform

    const uint32_t k_tile = stage_of(i);
    const uint32_t v_tile = k_tile + Shape::kKvBytes;
    if (i == 0 || consumer.tile == 0) {  // first tile of a pair in this slice
      const uint32_t q_rows = k_tile + 2 * Shape::kKvBytes;
      if constexpr (kQRows == 16) {
#pragma unroll
        for (int kk = 0; kk < kSteps; ++kk) {
          LoadMatrixX4(qa[kk], q_rows + Swizzled((mi & 1) * 8 + (lane & 7), 2 * kk + (mi >> 1), kChunks));
        }
      } else {  // rows 8..15 are padding: a1 = a3 = 0
#pragma unroll
        for (int kk = 0; kk < kSteps; kk += 2) {
          uint32_t r[4];
          LoadMatrixX4(r, q_rows + Swizzled(lane & 7, 2 * kk + mi, kChunks));
          qa[kk][0] = r[0];
          qa[kk][2] = r[1];
          qa[kk + 1][0] = r[2];
          qa[kk + 1][2] = r[3];
          qa[kk][1] = qa[kk][3] = qa[kk + 1][1] = qa[kk + 1][3] = 0;
        }
      }
#pragma unroll
      for (int d = 0; d < kHeadDim / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
      m[0] = m[1] = -INFINITY;
      l[0] = l[1] = 0.0f;
    }

    // Scores of the 16 keys: s[n] covers keys 8n..8n+7. Even and odd k-steps
    // accumulate apart, halving the chain of dependent mmas.
    float s[2][4] = {}, s_odd[2][4] = {};
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) {
      uint32_t b[4];
      LoadMatrixX4(b, k_tile + Swizzled((mi >> 1) * 8 + (lane & 7), 2 * kk + (mi & 1), kChunks));
      float(&acc)[2][4] = (kk & 1) ? s_odd : s;
      Mma<T>(acc[0], qa[kk], b[0], b[1]);
      Mma<T>(acc[1], qa[kk], b[2], b[3]);
    }
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] += s_odd[n][e];
    }

    // Online softmax over the tile.
    const int keys_valid =
        consumer.span.key_end - (consumer.span.key_begin + consumer.tile * kTileKeys);
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = n * 8 + 2 * t + (e & 1);
        s[n][e] = key < keys_valid ? s[n][e] * a.scale_log2 : -INFINITY;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[n][e]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float m_new = fmaxf(m[r], tile_max[r]);  // finite: key 0 of a tile is always valid
      alpha[r] = Exp2(m[r] - m_new);
      m[r] = m_new;
    }
    float tile_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = Exp2(s[n][e] - m[e >> 1]);
        tile_sum[e >> 1] += s[n][e];
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + tile_sum[r];
#pragma unroll
    for (int d = 0; d < kHeadDim / 8; ++d) {
      o[d][0] *= alpha[0];
      o[d][1] *= alpha[0];
      o[d][2] *= alpha[1];
      o[d][3] *= alpha[1];
    }

    // O += P·V.
    const uint32_t pa[4] = {PackPair<T>(s[0][0], s[0][1]), PackPair<T>(s[0][2], s[0][3]),
                            PackPair<T>(s[1][0], s[1][1]), PackPair<T>(s[1][2], s[1][3])};
#pragma unroll
    for (int dd = 0; dd < kSteps; ++dd) {
      uint32_t b[4];
      LoadMatrixX4Trans(b, v_tile + Swizzled((mi & 1) * 8 + (lane & 7), 2 * dd + (mi >> 1), kChunks));
      Mma<T>(o[2 * dd], pa, b[0], b[1]);
      Mma<T>(o[2 * dd + 1], pa, b[2], b[3]);
    }

    // End of this slice's piece of the pair: write it out.
    const bool pair_ends = consumer.tile == consumer.span.num_tiles - 1;
    if (pair_ends || i == num_tiles - 1) {
      float inv[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        inv[r] = 1.0f / l[r];
      }
      const bool pair_starts = consumer.index - consumer.tile >= first_tile;
      if (pair_starts && pair_ends) {
        T* out = a.out + (static_cast<int64_t>(consumer.seq) * a.num_q_heads +
                          static_cast<int64_t>(consumer.kv_head) * a.group) * kHeadDim;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = g + 8 * r;
          if (row >= a.group) continue;
#pragma unroll
          for (int d = 0; d < kHeadDim / 8; ++d) {
            *reinterpret_cast<uint32_t*>(out + row * kHeadDim + d * 8 + 2 * t) =
                PackPair<T>(o[d][2 * r] * inv[r], o[d][2 * r + 1] * inv[r]);
          }
        }
      } else {
        // Slot 2w: the piece this slice starts inside; 2w+1: the one it ends inside.
        const int64_t slot = 2 * static_cast<int64_t>(warp_id) + (pair_starts ? 1 : 0);
        float* part = a.partial_out + slot * a.group * kHeadDim;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = g + 8 * r;
          if (row >= a.group) continue;
#pragma unroll
          for (int d = 0; d < kHeadDim / 8; ++d) {
            *reinterpret_cast<float2*>(part + row * kHeadDim + d * 8 + 2 * t) =
                make_float2(o[d][2 * r] * inv[r], o[d][2 * r + 1] * inv[r]);
          }
          if (t == 0) a.partial_lse[slot * a.group + row] = m[r] + __log2f(l[r]);
        }
      }
    }
    if (i + 1 < num_tiles) Advance(a, consumer);
  }
}

// ---------------------------------------------------------------------------
// Merge kernel: one warp per (sequence, query head). Zeros for unselected
// groups (and empty contexts), nothing for pairs written whole, the
// log-sum-exp merge of the partials otherwise: lanes over the parts for the
// weights, then lanes over the columns with several parts' loads in flight
// (a pair of a small batch can be spread over hundreds of warps).
// ---------------------------------------------------------------------------

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kWarps * 32, 8)
    MergePartialsKernel(const __grid_constant__ KernelArgs<T> a) {
  // The next launch's attention kernel may become resident while this runs.
  LetDependentsStart();
  const int seq = blockIdx.x;
  const int q_head = static_cast<int>(blockIdx.y) * kWarps + static_cast<int>(threadIdx.x >> 5);
  // Every thread waits for the attention kernel before it exits, also where
  // it has nothing to merge: this grid then finishes after that one, and the
  // next launch (which waits for this grid) never overlaps it.
  if (q_head >= a.num_q_heads) {
    WaitForPredecessor();  // the attention kernel
    return;
  }
  const int kv_head = q_head / a.group;
  const int row = q_head % a.group;
  const int lane = threadIdx.x & 31;
  const SeqSpan span = LoadSeqSpan(a, seq);
  int pair = kv_head;
  if (a.group_indptr != nullptr) {
    pair = -1;
    for (int i = lane; i < span.num_pairs; i += 32) {
      if (a.group_indices[span.pair_base + i] == kv_head) pair = i;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      pair = max(pair, __shfl_xor_sync(0xffffffffu, pair, offset));
    }
  }
  constexpr int kPerLane = kHeadDim / 32;  // 2 or 4 consecutive columns per lane
  T* out = a.out + (static_cast<int64_t>(seq) * a.num_q_heads + q_head) * kHeadDim + lane * kPerLane;
  if (pair < 0 || span.num_tiles == 0) {  // zeros need nothing from the attention kernel
#pragma unroll
    for (int e = 0; e < kPerLane; e += 2) *reinterpret_cast<uint32_t*>(out + e) = 0u;
    WaitForPredecessor();  // the attention kernel
    return;
  }
  WaitForPredecessor();  // the attention kernel
  const int share = *a.tiles_per_warp;
  const int first = a.tile_begin[seq] + pair * span.num_tiles;
  const int first_warp = first / share;
  const int num_parts = (first + span.num_tiles - 1) / share - first_warp + 1;
  if (num_parts == 1) return;  // written whole by its warp
  // Part j came from warp first_warp + j: slot 2w+1 for the first (the piece
  // its slice ends inside), 2w for the others (the piece theirs starts inside).
  auto slot_of = [&](int j) { return 2 * static_cast<int64_t>(first_warp + j) + (j == 0 ? 1 : 0); };
  auto lse_of = [&](int j) { return a.partial_lse[slot_of(j) * a.group + row]; };

  float max_lse = -INFINITY;
  for (int j = lane; j < num_parts; j += 32) max_lse = fmaxf(max_lse, lse_of(j));
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    max_lse = fmaxf(max_lse, __shfl_xor_sync(0xffffffffu, max_lse, offset));
  }
  float sum = 0.0f;
  float acc[kPerLane] = {};
  for (int base = 0; base < num_parts; base += 32) {
    const int count = min(32, num_parts - base);
    const float weight = lane < count ? Exp2(lse_of(base + lane) - max_lse) : 0.0f;
    sum += weight;
#pragma unroll 8
    for (int k = 0; k < count; ++k) {
      const float w = __shfl_sync(0xffffffffu, weight, k);
      const float* part = a.partial_out + (slot_of(base + k) * a.group + row) * kHeadDim + lane * kPerLane;
      if constexpr (kPerLane == 4) {
        const float4 v = *reinterpret_cast<const float4*>(part);
        acc[0] += w * v.x;
        acc[1] += w * v.y;
        acc[2] += w * v.z;
        acc[3] += w * v.w;
      } else {
        const float2 v = *reinterpret_cast<const float2*>(part);
        acc[0] += w * v.x;
        acc[1] += w * v.y;
      }
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const float inv = 1.0f / sum;
#pragma unroll
  for (int e = 0; e < kPerLane; e += 2) {
    *reinterpret_cast<uint32_t*>(out + e) = PackPair<T>(acc[e] * inv, acc[e + 1] * inv);
  }
}

// ---------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------

struct WorkspaceLayout {
  size_t tiles_per_warp, tile_begin, partial_lse, partial_out, total;
};

WorkspaceLayout MakeLayout(int64_t num_seqs, int64_t group, int64_t head_dim, int total_warps) {
  auto align = [](size_t x) { return (x + 255) / 256 * 256; };
  const size_t slots = 2 * static_cast<size_t>(total_warps);
  WorkspaceLayout w;
  w.tiles_per_warp = 0;
  w.tile_begin = align(sizeof(int));
  w.partial_lse = align(w.tile_begin + sizeof(int) * static_cast<size_t>(num_seqs + 1));
  w.partial_out = align(w.partial_lse + sizeof(float) * slots * group);
  w.total = align(w.partial_out + sizeof(float) * slots * group * head_dim);
  return w;
}

size_t PlanBytes(int64_t num_seqs) { return (sizeof(int) * static_cast<size_t>(num_seqs + 1) + 15) / 16 * 16; }

// What a launch needs to know about the device (cached per device).
struct DeviceFacts {
  int grid = 0;         // persistent grid: as many CTAs as fit at once
  int max_smem = 0;     // dynamic shared memory a CTA may take
  bool pdl = false;     // programmatic dependent launch (Hopper and later)
};

template <typename T, int kHeadDim, int kQRows>
cudaError_t GetDeviceFacts(DeviceFacts* facts) {
  static std::mutex mu;
  static std::array<DeviceFacts, 64> cache{};
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (device < 0 || device >= static_cast<int>(cache.size())) return cudaErrorInvalidDevice;
  std::lock_guard<std::mutex> lock(mu);
  if (cache[device].grid == 0) {
    auto kernel = PagedDecodeAttentionKernel<T, kHeadDim, kQRows>;
    int optin = 0, sms = 0, per_sm = 0, major = 0;
    cudaFuncAttributes attributes{};
    cudaError_t e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&attributes, kernel);
    // The opt-in limit covers static plus dynamic shared memory.
    const int max_dynamic = optin - static_cast<int>(attributes.sharedSizeBytes);
    if (e == cudaSuccess) {
      e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_dynamic);
    }
    if (e == cudaSuccess) {
      e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &per_sm, kernel, kWarps * 32, TileShape<kHeadDim, kQRows>::kCtaBytes + kPlanReserveBytes);
    }
    if (e != cudaSuccess) return e;
    if (per_sm < 1) return cudaErrorInvalidConfiguration;
    cache[device] = {sms * per_sm, max_dynamic, major >= 9};
  }
  *facts = cache[device];
  return cudaSuccess;
}

template <typename T, int kHeadDim, int kQRows>
cudaError_t Launch(const PagedDecodeAttentionParams& p, void* workspace, size_t workspace_bytes,
                   cudaStream_t stream, size_t* bytes_needed) {
  DeviceFacts device;
  if (cudaError_t e = GetDeviceFacts<T, kHeadDim, kQRows>(&device); e != cudaSuccess) return e;
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  const WorkspaceLayout layout = MakeLayout(p.num_seqs, group, kHeadDim, device.grid * kWarps);
  const size_t smem = TileShape<kHeadDim, kQRows>::kCtaBytes + PlanBytes(p.num_seqs);
  if (smem > static_cast<size_t>(device.max_smem)) return cudaErrorInvalidValue;  // num_seqs too large
  if (bytes_needed != nullptr) {
    *bytes_needed = layout.total;
    return cudaSuccess;
  }
  if (workspace == nullptr || workspace_bytes < layout.total ||
      reinterpret_cast<uintptr_t>(workspace) % 256 != 0) {
    return cudaErrorInvalidValue;
  }
  if (p.num_seqs == 0) return cudaSuccess;

  uint8_t* ws = static_cast<uint8_t*>(workspace);
  KernelArgs<T> a;
  a.q = static_cast<const T*>(p.q);
  a.k_cache = static_cast<const T*>(p.k_cache);
  a.v_cache = static_cast<const T*>(p.v_cache);
  a.out = static_cast<T*>(p.out);
  a.context_lens = p.context_lens;
  a.block_indptr = p.block_indptr;
  a.block_ids = p.block_ids;
  a.group_indptr = p.group_indptr;
  a.group_indices = p.group_indices;
  a.num_seqs = static_cast<int>(p.num_seqs);
  a.num_q_heads = static_cast<int>(p.num_q_heads);
  a.num_kv_heads = static_cast<int>(p.num_kv_heads);
  a.group = static_cast<int>(group);
  a.block_size = static_cast<int>(p.block_size);
  a.sliding_window = static_cast<int>(p.sliding_window);
  if (p.kv_layout == KvLayout::kNHD) {  // [num_blocks, block_size, num_kv_heads, head_dim]
    a.stride_row = p.num_kv_heads * kHeadDim;
    a.stride_head = kHeadDim;
  } else {  // [num_blocks, num_kv_heads, block_size, head_dim]
    a.stride_row = kHeadDim;
    a.stride_head = p.block_size * kHeadDim;
  }
  a.stride_block = p.block_size * p.num_kv_heads * kHeadDim;
  a.scale_log2 = p.scale * 1.4426950408889634f;
  a.tiles_per_warp = reinterpret_cast<int*>(ws + layout.tiles_per_warp);
  a.tile_begin = reinterpret_cast<int*>(ws + layout.tile_begin);
  a.partial_lse = reinterpret_cast<float*>(ws + layout.partial_lse);
  a.partial_out = reinterpret_cast<float*>(ws + layout.partial_out);

  // Both kernels are programmatic dependents of what precedes them on the
  // stream (Hopper): their CTAs become resident while it finishes and wait
  // (griddepcontrol.wait) before touching its results, so neither the launch
  // after the previous kernel nor the one between attention and merge leaves
  // the GPU idle. The merge writes its zeros while the attention still runs.
  cudaLaunchAttribute overlap[1];
  overlap[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t attention{};
  attention.gridDim = dim3(static_cast<unsigned>(device.grid));
  attention.blockDim = dim3(kWarps * 32);
  attention.dynamicSmemBytes = smem;
  attention.stream = stream;
  attention.attrs = overlap;
  attention.numAttrs = device.pdl ? 1 : 0;
  if (cudaError_t e = cudaLaunchKernelEx(&attention, PagedDecodeAttentionKernel<T, kHeadDim, kQRows>, a);
      e != cudaSuccess) {
    return e;
  }
  cudaLaunchConfig_t merge = attention;
  merge.gridDim = dim3(static_cast<unsigned>(p.num_seqs),
                       static_cast<unsigned>((p.num_q_heads + kWarps - 1) / kWarps));
  merge.dynamicSmemBytes = 0;
  return cudaLaunchKernelEx(&merge, MergePartialsKernel<T, kHeadDim>, a);
}

cudaError_t Dispatch(const PagedDecodeAttentionParams& p, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream, size_t* bytes_needed) {
  if (p.num_seqs < 0 || p.num_seqs >= (1 << 30) || p.num_kv_heads <= 0 || p.num_q_heads <= 0 ||
      p.num_q_heads % p.num_kv_heads != 0 || p.num_q_heads / p.num_kv_heads > kMaxGroup ||
      p.num_q_heads > (1 << 20) || p.block_size <= 0 || p.block_size >= (1 << 30) ||
      p.sliding_window < 0 || p.sliding_window >= (int64_t{1} << 31) ||
      (p.kv_layout != KvLayout::kNHD && p.kv_layout != KvLayout::kHND) ||
      (p.head_dim != 64 && p.head_dim != 128)) {
    return cudaErrorInvalidValue;
  }
  if (bytes_needed == nullptr && p.num_seqs > 0 &&
      (p.q == nullptr || p.k_cache == nullptr || p.v_cache == nullptr || p.out == nullptr ||
       p.context_lens == nullptr || p.block_indptr == nullptr || p.block_ids == nullptr ||
       (p.group_indptr == nullptr) != (p.group_indices == nullptr))) {
    return cudaErrorInvalidValue;
  }
  const bool wide_group = p.num_q_heads / p.num_kv_heads > 8;
  const bool bf16 = p.dtype == AttentionDtype::kBf16;
#define POLAR_DECODE_CASE(T, D)                                                                 \
  return wide_group ? Launch<T, D, 16>(p, workspace, workspace_bytes, stream, bytes_needed) \
                    : Launch<T, D, 8>(p, workspace, workspace_bytes, stream, bytes_needed)
  if (p.head_dim == 64) {
    if (bf16) POLAR_DECODE_CASE(__nv_bfloat16, 64);
    POLAR_DECODE_CASE(__half, 64);
  }
  if (bf16) POLAR_DECODE_CASE(__nv_bfloat16, 128);
  POLAR_DECODE_CASE(__half, 128);
#undef POLAR_DECODE_CASE
}

}  // namespace

cudaError_t PagedDecodeAttentionWorkspaceBytes(const PagedDecodeAttentionParams& p, size_t* bytes) {
  if (bytes == nullptr) return cudaErrorInvalidValue;
  return Dispatch(p, nullptr, 0, nullptr, bytes);
}

cudaError_t PagedDecodeAttention(const PagedDecodeAttentionParams& p, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream) {
  return Dispatch(p, workspace, workspace_bytes, stream, nullptr);
}

}  // namespace polar::kernels::cuda
