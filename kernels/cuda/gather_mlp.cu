// Gather-GEMM pair of the sparse MLP: see gather_mlp.h for what and why.
// How, in short:
//
//  - Both GEMMs are computed transposed ("swap AB"), so that the long
//    dimension fills the 16 rows of an mma.m16n8k16 and the batch is its N:
//      fc1: hᵀ[neuron, m] = Σ_c w1[idx[neuron], c] · x[m, c]
//      fc2: yᵀ[j, m]      = Σ_n w2t[idx[n], j] · h[m, n]
//    The gathered weight rows ("G" tiles) stream from memory once; x and h
//    ("B" tiles, a few KB) come from L2.
//  - One CTA = 4 warps computes an output tile of 64 rows of the long
//    dimension (128 available for experiments) for the whole batch, over a
//    contiguous range of 64-wide reduction steps, through a cp.async
//    pipeline (3 to 5 steps in flight); a 16-byte chunk per thread and copy,
//    each gathered row read as whole 128-byte segments. (Splitting a batch
//    of 64 into 16-row blocks that share weight tiles through L2 was tried
//    and measured slower: L2 bandwidth then bounds it.)
//  - Above 16 batch rows, 2 or 4 warps share each output row and split
//    every step's k16 slices (each warp re-reading a 64-row B tile from
//    shared memory cost more than the extra accumulators); their sums meet
//    in shared memory at the end, in warp order.
//  - Split reduction: when the output tiles alone cannot fill the GPU, each
//    tile's steps are cut into `splits` ranges on separate CTAs. Every CTA
//    writes its fp32 partial and arrives at the tile's counter (one
//    release/acquire atomic); the last to arrive copies the others' partials
//    into shared memory in one round of cp.async and adds them in split
//    order (deterministic), applies the epilogue and resets the counter.
//  - Epilogues: fc1 adds b1[idx], applies ReLU, writes h in the input type
//    (padding neurons as zeros); fc2 adds b2 and optionally the old y. Their
//    inputs are fetched so that neither the first steps nor the tail wait on
//    them: fc1's indices by cp.async with the first steps, the biases and the
//    old y just before the arrival (bench/gather_mlp_timeline shows where a
//    launch's time goes, CTA by CTA).
//  - Launched as programmatic dependents (Hopper): a CTA may start while the
//    previous kernel finishes and waits in griddepcontrol.wait before reading
//    its outputs. Weights need no waiting: the dense fc1 and fc2 after our
//    own fc1 (whose CTAs trigger their dependents only after their own wait,
//    so the indices are complete by then) start loading weights at once.
//
// Shared memory tiles are swizzled (16-byte chunk index XOR row % 8) so that
// ldmatrix's 8 rows hit 8 different bank groups.
#include "kernels/cuda/gather_mlp.h"
#include "kernels/cuda/gather_mlp_timeline.h"
#include "kernels/cuda/warp_mma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>
#include <type_traits>

namespace polar::kernels::cuda {
namespace {

using namespace warp;  // Swizzled, CopyAsync*, LoadMatrix*, Mma, WaitForPredecessor (warp_mma.cuh)

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kStepCols = 64;  // reduction elements per pipeline step
constexpr int kMaxRows = 64;

// ---------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------

// kNT: n-tiles of 8 batch rows (1, 2, 4, 8); kMT: m-tiles of 16 per warp (1, 2).
template <int kNT, int kMT, bool kFc2>
struct Shape {
  static constexpr int kTileRows = kWarps * 16 * kMT;  // output rows (neurons or columns) per CTA
  // G tile in shared memory: fc1 [kTileRows neurons, 64 columns],
  // fc2 [64 neurons, kTileRows columns].
  static constexpr int kGRows = kFc2 ? kStepCols : kTileRows;
  static constexpr int kGChunks = (kFc2 ? kTileRows : kStepCols) / 8;  // 16-byte chunks per row
  static constexpr int kGBytes = kGRows * kGChunks * 16;
  static constexpr int kGLoads = kGRows * kGChunks / kThreads;  // chunks per thread per step
  static constexpr int kBRows = 8 * kNT;                        // batch rows, padded
  static constexpr int kBBytes = kBRows * kStepCols * 2;
  static constexpr int kBLoads = (kBRows * 8 + kThreads - 1) / kThreads;
  static constexpr int kStageBytes = kGBytes + kBBytes;
  // Pipeline depth: 5 steps in flight for small stages (9-12 KB), 3 or 4
  // for large ones (16-24 KB), so that 45-96 KB of loads are in flight per
  // CTA; fc2's large stages stay at 3 in flight so that two of its CTAs
  // still fit beside one of fc1's (and load weights while it runs).
  static constexpr int kStages = kStageBytes <= 12 * 1024 ? 6 : kFc2 ? 4 : 5;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static constexpr int kPartialFloat4s = kMT * kNT * kThreads;  // one CTA's partial
};

// ---------------------------------------------------------------------------
// Device helpers
// ---------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ float ToFloat(T v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else {
    return __bfloat162float(v);
  }
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else {
    return __float2bfloat16_rn(v);
  }
}

#if defined(POLAR_GATHER_MLP_TIMELINE)
__device__ uint64_t g_timeline[2][kTimelineMaxCtas][kTimelineEvents];
#endif

// Records event for this CTA (gather_mlp_timeline.h); nothing in the library.
template <bool kFc2>
__device__ __forceinline__ void Mark(TimelineEvent event) {
#if defined(POLAR_GATHER_MLP_TIMELINE)
  if (threadIdx.x == 0 && blockIdx.x < kTimelineMaxCtas) {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    g_timeline[kFc2][blockIdx.x][event] = t;
    if (event == kTimelineEntry) {
      uint32_t sm;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
      g_timeline[kFc2][blockIdx.x][kTimelineSm] = sm;
    }
  }
#endif
}


// ---------------------------------------------------------------------------
// The kernel (fc1 or fc2)
// ---------------------------------------------------------------------------

template <typename T>
struct GemmArgs {
  const T* x;      // [rows, hidden]            fc1's B
  const T* w1;     // [ffn, hidden]             fc1's G
  const T* b1;     // [ffn] or nullptr
  const T* w2t;    // [ffn, hidden]             fc2's G
  const T* b2;     // [hidden] or nullptr
  const int32_t* indices;  // [num_selected] or nullptr (identity)
  T* h;            // [rows, h_stride]          fc1's output, fc2's B
  T* y;            // [rows, hidden]
  int rows, hidden, num_selected, h_stride;
  int steps;       // reduction steps of 64 of the whole GEMM
  int tiles;       // output tiles
  int splits;      // CTAs per output tile
  bool accumulate;
  bool weights_before_wait;  // G tiles (indices included) may be read before griddepcontrol.wait
  float4* partials;  // [tiles * splits, kMT * kNT, kThreads]
  int* counters;     // [tiles] arrivals per tile, zero between launches
};

// Fragment layout of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16x16): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16x8):  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C (16x8):  c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// M = neurons (fc1) or output columns (fc2), N = batch rows, K = the reduction.
// fc1's G tile is A as stored (ldmatrix); fc2's is Aᵀ (ldmatrix.trans). The
// B tile (x or h, one row per batch row, reduction contiguous) is B as
// stored, "col" layout.
//
// Warp layouts (kKGroups warps share each output row): with 1, each warp
// owns kMT 16-row blocks of the output tile and runs all 4 k16 slices of a
// step, so every warp reads the whole B tile from shared memory; with 2 or 4,
// the warps of a group split each step's k16 slices between them, each
// accumulates the group's rows (kKGroups x the accumulators), and their sums
// are added through shared memory at the end: 1/kKGroups of the B-tile
// ldmatrix traffic, for large batches, where B is as large as G.
template <typename T, int kNT, int kMT, bool kFc2, int kKGroups>
__global__ void __launch_bounds__(kThreads) GatherGemmKernel(const __grid_constant__ GemmArgs<T> a) {
  using S = Shape<kNT, kMT, kFc2>;
  static_assert(kKGroups == 1 || kKGroups == 2 || kKGroups == 4, "warps per output row");
  static_assert(kWarps == 4 && kStepCols / 16 == 4, "4 warps, 4 k16 slices per step");
  constexpr int kAccM = kKGroups * kMT;               // accumulated 16-row blocks per warp
  constexpr int kKSlices = kStepCols / 16 / kKGroups;  // k16 slices per warp per step
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ int is_last;
  __shared__ int32_t tile_sources[S::kTileRows];  // fc1: indices[tile's neurons]
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int split = static_cast<int>(blockIdx.x) % a.splits;
  const int tile = static_cast<int>(blockIdx.x) / a.splits;
  const int step_begin = static_cast<int>(static_cast<int64_t>(split) * a.steps / a.splits);
  const int step_end = static_cast<int>(static_cast<int64_t>(split + 1) * a.steps / a.splits);
  const int num_steps = step_end - step_begin;
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  Mark<kFc2>(kTimelineEntry);

  // This thread's G chunks: row and 16-byte chunk of each, and the source
  // row (a weight row id, or -1 for a zero row) of the next step to issue.
  const T* g_matrix = kFc2 ? a.w2t : a.w1;
  int g_row[S::kGLoads], g_chunk[S::kGLoads], g_src[S::kGLoads];
#pragma unroll
  for (int i = 0; i < S::kGLoads; ++i) {
    const int c = tid + i * kThreads;
    g_row[i] = c / S::kGChunks;
    g_chunk[i] = c % S::kGChunks;
  }
  // Neuron position (in the selection) of G row r at a step.
  auto neuron_of = [&](int r, int step) { return kFc2 ? step * kStepCols + r : tile * S::kTileRows + r; };
  auto source_row = [&](int neuron) {
    if (neuron >= a.num_selected) return -1;
    return a.indices != nullptr ? a.indices[neuron] : neuron;
  };
  auto load_sources = [&](int step) {
#pragma unroll
    for (int i = 0; i < S::kGLoads; ++i) g_src[i] = step < step_end ? source_row(neuron_of(g_row[i], step)) : -1;
  };
  auto issue_g = [&](int stage, int step) {
    const uint32_t base = smem_base + stage * S::kStageBytes;
    const int col = kFc2 ? tile * S::kTileRows : step * kStepCols;  // first column of the tile
#pragma unroll
    for (int i = 0; i < S::kGLoads; ++i) {
      // fc2's last tile may reach past hidden (128-column tiles): zeros there.
      const bool valid = g_src[i] >= 0 && (!kFc2 || col + g_chunk[i] * 8 < a.hidden);
      const T* src = g_matrix + (valid ? static_cast<int64_t>(g_src[i]) * a.hidden + col + g_chunk[i] * 8 : 0);
      CopyAsync16(base + Swizzled(g_row[i], g_chunk[i], S::kGChunks), src, valid);
    }
    if constexpr (kFc2) load_sources(step + 1);  // fc2's rows change every step
  };
  auto issue_b = [&](int stage, int step) {
    const uint32_t base = smem_base + stage * S::kStageBytes + S::kGBytes;
    const T* matrix = kFc2 ? a.h : a.x;
    const int64_t stride = kFc2 ? a.h_stride : a.hidden;
#pragma unroll
    for (int i = 0; i < S::kBLoads; ++i) {
      const int c = tid + i * kThreads;
      const int row = c / 8, chunk = c % 8;
      if (row < S::kBRows) {
        const bool valid = row < a.rows;
        const T* src = matrix + (valid ? row * stride + step * kStepCols + chunk * 8 : 0);
        CopyAsync16(base + Swizzled(row, chunk, 8), src, valid);
      }
    }
  };

  // Prologue: the first S::kStages - 1 steps in flight; weights possibly before
  // the predecessor is done.
  if (a.weights_before_wait) {
    load_sources(step_begin);
#pragma unroll
    for (int s = 0; s < S::kStages - 1; ++s) {
      if (s < num_steps) issue_g(s, step_begin + s);
    }
  }
  WaitForPredecessor();
  Mark<kFc2>(kTimelineWaited);
  LetDependentsStart();
  if (!a.weights_before_wait) load_sources(step_begin);
  // fc1's epilogue needs the weight row of each output neuron for its bias:
  // copied now, read after the steps (a load into a register here would
  // stall the first steps on it).
  if (!kFc2 && a.indices != nullptr && tid < S::kTileRows) {
    const int neuron = min(tile * S::kTileRows + tid, a.num_selected - 1);
    CopyAsync4(static_cast<uint32_t>(__cvta_generic_to_shared(&tile_sources[tid])), a.indices + neuron, true);
  }
#pragma unroll
  for (int s = 0; s < S::kStages - 1; ++s) {
    if (s < num_steps) {
      if (!a.weights_before_wait) issue_g(s, step_begin + s);
      issue_b(s, step_begin + s);
    }
    CommitCopies();
  }

  // Element e of acc[mt][nt] is output row (neuron or column)
  // 16 * m_tile + g + 8 * (e / 2), batch row 8 * nt + 2t + e % 2.
  const int g = lane >> 2, t = lane & 3;
  auto out_row_of = [&](int mt, int hi) { return tile * S::kTileRows + 16 * (warp * kMT + mt) + g + 8 * hi; };

  float acc[kAccM][kNT][4];
#pragma unroll
  for (int mt = 0; mt < kAccM; ++mt) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
    }
  }

  for (int i = 0; i < num_steps; ++i) {
    WaitCopies<S::kStages - 2>();
    __syncthreads();  // step i landed for every thread; stage (i - 1) % S::kStages is free
    if (i == 0) Mark<kFc2>(kTimelineFirstStep);
    const int next = i + S::kStages - 1;
    if (next < num_steps) {
      issue_g(next % S::kStages, step_begin + next);
      issue_b(next % S::kStages, step_begin + next);
    }
    CommitCopies();

    const uint32_t g_base = smem_base + (i % S::kStages) * S::kStageBytes;
    const uint32_t b_base = g_base + S::kGBytes;
#pragma unroll
    for (int kk = 0; kk < kKSlices; ++kk) {
      const int ks = warp % kKGroups + kKGroups * kk;
      uint32_t b[kNT][2];
      if constexpr (kNT == 1) {
        LoadMatrixX2(b[0], b_base + Swizzled(lane & 7, 2 * ks + ((lane >> 3) & 1), 8));
      } else {
#pragma unroll
        for (int p = 0; p < kNT / 2; ++p) {
          uint32_t r[4];
          LoadMatrixX4(r, b_base + Swizzled(16 * p + (lane >> 4) * 8 + (lane & 7), 2 * ks + ((lane >> 3) & 1), 8));
          b[2 * p][0] = r[0];
          b[2 * p][1] = r[1];
          b[2 * p + 1][0] = r[2];
          b[2 * p + 1][1] = r[3];
        }
      }
#pragma unroll
      for (int mt = 0; mt < kAccM; ++mt) {
        const int m_tile = warp / kKGroups * kAccM + mt;  // 16-row block of the CTA's output tile
        uint32_t af[4];
        if constexpr (kFc2) {
          LoadMatrixX4Trans(af, g_base + Swizzled(16 * ks + (lane >> 4) * 8 + (lane & 7),
                                                  2 * m_tile + ((lane >> 3) & 1), S::kGChunks));
        } else {
          LoadMatrixX4(af, g_base + Swizzled(16 * m_tile + (lane & 15), 2 * ks + (lane >> 4), S::kGChunks));
        }
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) Mma<T>(acc[mt][nt], af, b[nt][0], b[nt][1]);
      }
    }
  }
  WaitCopies<0>();  // nothing may be in flight into shared memory at exit (or before its reuse below)
  Mark<kFc2>(kTimelineLoopDone);

  if constexpr (kKGroups > 1) {
    // Add the k-slice sums of each group's warps in warp order
    // (deterministic); afterwards acc[mt] holds this warp's own blocks
    // warp * kMT + mt, as with one warp per row.
    constexpr int kTileBlocks = kWarps * kMT;  // 16-row blocks of the tile
    static_assert(kKGroups * kTileBlocks * kNT * 32 * sizeof(float4) <= S::kSmemBytes, "sums fit the stages");
    float4* sums = reinterpret_cast<float4*>(smem);  // [kKGroups][kTileBlocks][kNT][32]
    __syncthreads();  // every warp is done reading the stages
#pragma unroll
    for (int mt = 0; mt < kAccM; ++mt) {
      const int block = warp / kKGroups * kAccM + mt;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        sums[(((warp % kKGroups) * kTileBlocks + block) * kNT + nt) * 32 + lane] =
            make_float4(acc[mt][nt][0], acc[mt][nt][1], acc[mt][nt][2], acc[mt][nt][3]);
      }
    }
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const int block = warp * kMT + mt;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        float4 total = sums[(block * kNT + nt) * 32 + lane];
#pragma unroll
        for (int k = 1; k < kKGroups; ++k) {
          const float4 v = sums[((k * kTileBlocks + block) * kNT + nt) * 32 + lane];
          total.x += v.x;
          total.y += v.y;
          total.z += v.z;
          total.w += v.w;
        }
        acc[mt][nt][0] = total.x;
        acc[mt][nt][1] = total.y;
        acc[mt][nt][2] = total.z;
        acc[mt][nt][3] = total.w;
      }
    }
  }

  // The biases (b2, or b1 through the indices) and (fc2 accumulating) the
  // old y, loaded before the arrival below so that their round trips overlap
  // the tail's; tile_sources has landed with the steps' copies.
  if constexpr (!kFc2) __syncthreads();  // tile_sources: copied by other threads
  T bias[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int out_row = out_row_of(mt, hi);
      int row = -1;
      if constexpr (kFc2) {
        if (a.b2 != nullptr && out_row < a.hidden) row = out_row;
      } else if (a.b1 != nullptr && out_row < a.num_selected) {
        row = a.indices != nullptr ? tile_sources[out_row - tile * S::kTileRows] : out_row;
      }
      bias[mt][hi] = row >= 0 ? (kFc2 ? a.b2 : a.b1)[row] : FromFloat<T>(0.0f);
    }
  }
  T old_y[kMT][2][kNT][2];
  if constexpr (kFc2) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int out_row = out_row_of(mt, hi);
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int m = 8 * nt + 2 * t + e;
            old_y[mt][hi][nt][e] = a.accumulate && m < a.rows && out_row < a.hidden
                                       ? a.y[static_cast<int64_t>(m) * a.hidden + out_row]
                                       : FromFloat<T>(0.0f);
          }
        }
      }
    }
  }

  // Split reduction: every CTA leaves its partial; the last one of the tile
  // adds them in split order (its own from registers).
  if (a.splits > 1) {
    float4* mine = a.partials + (static_cast<int64_t>(tile) * a.splits + split) * S::kPartialFloat4s;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        __stcg(mine + (mt * kNT + nt) * kThreads + tid,
               make_float4(acc[mt][nt][0], acc[mt][nt][1], acc[mt][nt][2], acc[mt][nt][3]));
      }
    }
    // Arrive: the barrier orders every thread's partial before thread 0's
    // release; its acquire (when last) orders the others' partials before
    // the reads below, for the whole CTA through the second barrier.
    __syncthreads();
    if (tid == 0) {
      int arrived;
      asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;\n" : "=r"(arrived) : "l"(a.counters + tile) : "memory");
      is_last = arrived == a.splits - 1;
      if (is_last) atomicExch(a.counters + tile, 0);  // ready for the next launch
    }
    __syncthreads();
    Mark<kFc2>(kTimelineArrived);
    if (!is_last) {
      Mark<kFc2>(kTimelineExit);
      return;
    }
    // The other splits' partials come into shared memory by cp.async, as
    // many at once as fit (all of them for the shapes of OPT-6.7B), so the
    // tail waits one round trip, not one per register-sized batch of loads.
    // Each thread copies and then reads only its own float4s.
    constexpr int kPartialBytes = S::kPartialFloat4s * static_cast<int>(sizeof(float4));
    constexpr int kSlots = S::kSmemBytes / kPartialBytes;
    static_assert(kSlots >= 1, "one partial fits the stages");
    const float4* tile_partials = a.partials + static_cast<int64_t>(tile) * a.splits * S::kPartialFloat4s + tid;
    const float4* slots = reinterpret_cast<const float4*>(smem) + tid;
    float4 sum[kMT][kNT];
    for (int first = 0; first < a.splits;) {
      // This round: splits [first, last), the others' partials in slots 0, 1, ...
      int last = first, slot = 0;
      for (; last < a.splits && (slot < kSlots || last == split); ++last) {
        if (last == split) continue;
#pragma unroll
        for (int f = 0; f < kMT * kNT; ++f) {
          CopyAsync16(smem_base + static_cast<uint32_t>(((slot * kMT * kNT + f) * kThreads + tid) * sizeof(float4)),
                      tile_partials + static_cast<int64_t>(last) * S::kPartialFloat4s + f * kThreads, true);
        }
        ++slot;
      }
      CommitCopies();
      WaitCopies<0>();
      slot = 0;
      for (int s = first; s < last; ++s) {
        const bool own = s == split;
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            const float4 v = own ? make_float4(acc[mt][nt][0], acc[mt][nt][1], acc[mt][nt][2], acc[mt][nt][3])
                                 : slots[(slot * kMT * kNT + mt * kNT + nt) * kThreads];
            if (s == 0) {
              sum[mt][nt] = v;
            } else {
              sum[mt][nt].x += v.x;
              sum[mt][nt].y += v.y;
              sum[mt][nt].z += v.z;
              sum[mt][nt].w += v.w;
            }
          }
        }
        if (!own) ++slot;
      }
      first = last;
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        acc[mt][nt][0] = sum[mt][nt].x;
        acc[mt][nt][1] = sum[mt][nt].y;
        acc[mt][nt][2] = sum[mt][nt].z;
        acc[mt][nt][3] = sum[mt][nt].w;
      }
    }
  }

  // Epilogue (the inputs loaded above).
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int out_row = out_row_of(mt, hi);
      // The last 128-row tile may reach past h's padded width or past hidden.
      if (out_row >= (kFc2 ? a.hidden : a.h_stride)) continue;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int m = 8 * nt + 2 * t + e;
          if (m >= a.rows) continue;
          const float v = acc[mt][nt][2 * hi + e] + ToFloat(bias[mt][hi]);
          if constexpr (kFc2) {
            a.y[static_cast<int64_t>(m) * a.hidden + out_row] =
                FromFloat<T>(a.accumulate ? v + ToFloat(old_y[mt][hi][nt][e]) : v);
          } else {
            // ReLU that keeps NaN visible; padding neurons are exact zeros.
            a.h[static_cast<int64_t>(m) * a.h_stride + out_row] = FromFloat<T>(v < 0.0f ? 0.0f : v);
          }
        }
      }
    }
  }
  Mark<kFc2>(kTimelineExit);
}

// ---------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------

// n-tiles of 8 batch rows: the batch padded to 8, 16, 32 or 64.
int NTilesFor(int64_t rows) {
  if (rows <= 8) return 1;
  if (rows <= 16) return 2;
  if (rows <= 32) return 4;
  return 8;
}

// 64-row output tiles (kMT = 1) for every batch: 128-row tiles halve the
// B-tile traffic of large batches but halve the tiles too, and measured
// slower below density 0.5 and no faster above (docs/performance-kernels.md).

// What a launch needs to know about the current device (cached per device).
struct DeviceFacts {
  int sms = 0;       // multiprocessors
  bool pdl = false;  // programmatic dependent launch (Hopper and later)
};

// The current device's facts; the first call per device also raises the
// kernel's dynamic shared memory limit.
template <typename T, int kNT, int kMT, bool kFc2, int kKGroups>
cudaError_t PrepareKernel(DeviceFacts* facts) {
  static std::mutex mu;
  static std::array<DeviceFacts, 64> cache{};
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (device < 0 || device >= static_cast<int>(cache.size())) return cudaErrorInvalidDevice;
  std::lock_guard<std::mutex> lock(mu);
  if (cache[device].sms == 0) {
    auto kernel = GatherGemmKernel<T, kNT, kMT, kFc2, kKGroups>;
    int sms = 0, major = 0;
    cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (e == cudaSuccess) {
      e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               Shape<kNT, kMT, kFc2>::kSmemBytes);
    }
    if (e != cudaSuccess) return e;
    cache[device] = {sms, major >= 9};
  }
  *facts = cache[device];
  return cudaSuccess;
}

struct GemmPlan {
  bool pdl = false;  // launch as a programmatic dependent (DeviceFacts::pdl)
  int tiles = 0;      // output tiles
  int steps = 0;      // reduction steps of the whole GEMM
  int splits = 1;     // CTAs per tile
  int ctas = 0;       // gridDim.x
  size_t partial_bytes = 0;
};

// Reduction splits: enough CTAs for fc1 to cover every multiprocessor once
// and for fc2 twice, each split keeping at least 2 steps. Measured on an
// H100 for OPT-6.7B's shapes (docs/performance-kernels.md): fc1's best at
// 0.8-1.2 CTAs per SM, fc2's at about 2, over batches 1-64 and densities
// 0.1-1; more splits cost more in partials and in the last CTA's sum than
// they gain. At low density fc1 then leaves room for fc2's CTAs, which load
// their weights while fc1 runs.
template <typename T, int kNT, int kMT, bool kFc2, int kKGroups>
cudaError_t PlanGemm(int64_t out_rows, int64_t reduction, int forced_splits, GemmPlan* plan) {
  using S = Shape<kNT, kMT, kFc2>;
  DeviceFacts device;
  if (cudaError_t e = PrepareKernel<T, kNT, kMT, kFc2, kKGroups>(&device); e != cudaSuccess) return e;
  const int sms = device.sms;
  plan->pdl = device.pdl;
  plan->tiles = static_cast<int>((out_rows + S::kTileRows - 1) / S::kTileRows);
  plan->steps = static_cast<int>(reduction / kStepCols);
  const int target = (kFc2 ? 2 : 1) * sms;
  if (forced_splits > 0) {
    plan->splits = forced_splits;
  } else if (plan->tiles == 0 || plan->tiles >= target) {
    plan->splits = 1;
  } else {
    plan->splits = std::min((target + plan->tiles / 2) / plan->tiles, plan->steps / 2);
    // fc2 at 9-32 rows: also no more than about 9 steps per CTA while 3 CTAs
    // per SM still fit (1-2 us faster at density 0.2-0.3 and 6 us dense;
    // slower at 1 row and at 33-64).
    if (kFc2 && (kNT == 2 || kNT == 4)) {
      plan->splits = std::max(plan->splits, std::min((plan->steps + 4) / 9, 3 * sms / plan->tiles));
    }
  }
  plan->splits = std::max(1, std::min(plan->splits, std::max(1, plan->steps)));
  plan->ctas = plan->tiles * plan->splits;
  plan->partial_bytes = plan->splits > 1 ? sizeof(float4) * S::kPartialFloat4s * plan->ctas : 0;
  return cudaSuccess;
}

size_t Align256(size_t x) { return (x + 255) / 256 * 256; }

// Workspace: [fc1 counters | fc2 counters | fc1 partials | fc2 partials]. The
// counters' place depends only on ffn and hidden, so launches of any batch
// size share them.
struct WorkspaceLayout {
  size_t fc1_counters = 0, fc2_counters = 0, fc1_partials = 0, fc2_partials = 0, total = 0;
};

WorkspaceLayout MakeLayout(const GatherMlpParams& p, const GemmPlan& fc1, const GemmPlan& fc2) {
  WorkspaceLayout w;
  w.fc1_counters = 0;
  w.fc2_counters = Align256(sizeof(int) * static_cast<size_t>(p.ffn / 64 + 1));
  w.fc1_partials = w.fc2_counters + Align256(sizeof(int) * static_cast<size_t>(p.hidden / 64 + 1));
  w.fc2_partials = w.fc1_partials + Align256(fc1.partial_bytes);
  w.total = w.fc2_partials + Align256(fc2.partial_bytes);
  return w;
}

enum class Which { kFc1, kFc2, kBoth };

template <typename T, int kNT, int kMT, int kKGroups>
cudaError_t Launch(const GatherMlpParams& p, Which which, void* workspace, size_t workspace_bytes,
                   cudaStream_t stream, size_t* bytes_needed) {
  const int64_t h_stride = GatherMlpHStride(p.num_selected);
  GemmPlan fc1, fc2;
  if (cudaError_t e = PlanGemm<T, kNT, kMT, false, kKGroups>(h_stride, p.hidden, p.fc1_splits, &fc1);
      e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e = PlanGemm<T, kNT, kMT, true, kKGroups>(p.hidden, h_stride, p.fc2_splits, &fc2);
      e != cudaSuccess) {
    return e;
  }
  const WorkspaceLayout layout = MakeLayout(p, fc1, fc2);
  if (bytes_needed != nullptr) {
    *bytes_needed = layout.total;
    return cudaSuccess;
  }
  if (workspace == nullptr || workspace_bytes < layout.total || reinterpret_cast<uintptr_t>(workspace) % 256 != 0) {
    return cudaErrorInvalidValue;
  }
  if (p.rows == 0) return cudaSuccess;

  uint8_t* ws = static_cast<uint8_t*>(workspace);
  GemmArgs<T> a;
  a.x = static_cast<const T*>(p.x);
  a.w1 = static_cast<const T*>(p.w1);
  a.b1 = static_cast<const T*>(p.b1);
  a.w2t = static_cast<const T*>(p.w2t);
  a.b2 = static_cast<const T*>(p.b2);
  a.indices = p.indices;
  a.h = static_cast<T*>(p.h);
  a.y = static_cast<T*>(p.y);
  a.rows = static_cast<int>(p.rows);
  a.hidden = static_cast<int>(p.hidden);
  a.num_selected = static_cast<int>(p.num_selected);
  a.h_stride = static_cast<int>(h_stride);
  a.accumulate = p.accumulate;

  cudaLaunchAttribute overlap[1];
  overlap[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  config.attrs = overlap;
  config.numAttrs = fc1.pdl ? 1 : 0;

  const bool run_fc1 = which != Which::kFc2 && fc1.tiles > 0;
  if (run_fc1) {
    GemmArgs<T> a1 = a;
    a1.steps = fc1.steps;
    a1.tiles = fc1.tiles;
    a1.splits = fc1.splits;
    a1.weights_before_wait = p.indices == nullptr;  // weights alone are not the predecessor's output
    a1.partials = reinterpret_cast<float4*>(ws + layout.fc1_partials);
    a1.counters = reinterpret_cast<int*>(ws + layout.fc1_counters);
    config.gridDim = dim3(static_cast<unsigned>(fc1.ctas));
    config.dynamicSmemBytes = Shape<kNT, kMT, false>::kSmemBytes;
    if (cudaError_t e = cudaLaunchKernelEx(&config, GatherGemmKernel<T, kNT, kMT, false, kKGroups>, a1); e != cudaSuccess) {
      return e;
    }
  }
  if (which != Which::kFc1) {
    GemmArgs<T> a2 = a;
    a2.steps = fc2.steps;
    a2.tiles = fc2.tiles;
    a2.splits = fc2.splits;
    // Right after our fc1 the indices are complete (its CTAs let dependents
    // start only after their own wait); otherwise only dense weights are safe.
    a2.weights_before_wait = p.indices == nullptr || run_fc1;
    a2.partials = reinterpret_cast<float4*>(ws + layout.fc2_partials);
    a2.counters = reinterpret_cast<int*>(ws + layout.fc2_counters);
    config.gridDim = dim3(static_cast<unsigned>(fc2.ctas));
    config.dynamicSmemBytes = Shape<kNT, kMT, true>::kSmemBytes;
    if (cudaError_t e = cudaLaunchKernelEx(&config, GatherGemmKernel<T, kNT, kMT, true, kKGroups>, a2); e != cudaSuccess) {
      return e;
    }
  }
  return cudaSuccess;
}

cudaError_t Dispatch(const GatherMlpParams& p, Which which, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream, size_t* bytes_needed) {
  if (p.rows < 0 || p.rows > kMaxRows || p.hidden <= 0 || p.hidden % 64 != 0 || p.hidden >= (1 << 24) ||
      p.ffn <= 0 || p.ffn >= (1 << 24) || p.num_selected < 0 || p.num_selected > p.ffn ||
      p.fc1_splits < 0 || p.fc2_splits < 0 || p.fc1_splits > 4096 || p.fc2_splits > 4096 ||
      (p.tile_rows != 0 && p.tile_rows != 64 && p.tile_rows != 128) ||
      (p.warp_layout != 0 && p.warp_layout != 1 && p.warp_layout != 2 && p.warp_layout != 4) ||
      (p.dtype != MlpDtype::kFp16 && p.dtype != MlpDtype::kBf16)) {
    return cudaErrorInvalidValue;
  }
  if (bytes_needed == nullptr && p.rows > 0) {
    if (p.indices == nullptr && p.num_selected != p.ffn) return cudaErrorInvalidValue;
    const bool need_fc1 = which != Which::kFc2, need_fc2 = which != Which::kFc1;
    if ((need_fc1 && (p.x == nullptr || p.w1 == nullptr)) || (need_fc2 && (p.w2t == nullptr || p.y == nullptr)) ||
        (p.h == nullptr && GatherMlpHStride(p.num_selected) > 0)) {
      return cudaErrorInvalidValue;
    }
  }
  const bool bf16 = p.dtype == MlpDtype::kBf16;
  const int n_tiles = NTilesFor(p.rows);
  const int m_tiles = p.tile_rows == 0 ? 1 : p.tile_rows / 64;
  // Above 16 rows the B tile is as large as the weight tile, and re-reading
  // it in every warp costs more than the extra accumulators of warps sharing
  // rows: pairs up to 32 rows, all four above (measured on an H100,
  // docs/performance-kernels.md).
  const int k_groups = p.warp_layout != 0 ? p.warp_layout : m_tiles != 1 ? 1 : n_tiles == 4 ? 2 : n_tiles == 8 ? 4 : 1;
  if (k_groups != 1 && m_tiles != 1) return cudaErrorInvalidValue;
#define POLAR_MLP_CASE(NT, MT, K)                                                                          \
  if (n_tiles == NT && m_tiles == MT && k_groups == K) {                                                   \
    return bf16 ? Launch<__nv_bfloat16, NT, MT, K>(p, which, workspace, workspace_bytes, stream, bytes_needed) \
                : Launch<__half, NT, MT, K>(p, which, workspace, workspace_bytes, stream, bytes_needed);      \
  }
  POLAR_MLP_CASE(1, 1, 1)
  POLAR_MLP_CASE(1, 1, 2)
  POLAR_MLP_CASE(1, 1, 4)
  POLAR_MLP_CASE(1, 2, 1)
  POLAR_MLP_CASE(2, 1, 1)
  POLAR_MLP_CASE(2, 1, 2)
  POLAR_MLP_CASE(2, 1, 4)
  POLAR_MLP_CASE(2, 2, 1)
  POLAR_MLP_CASE(4, 1, 1)
  POLAR_MLP_CASE(4, 1, 2)
  POLAR_MLP_CASE(4, 1, 4)
  POLAR_MLP_CASE(4, 2, 1)
  POLAR_MLP_CASE(8, 1, 1)
  POLAR_MLP_CASE(8, 1, 2)
  POLAR_MLP_CASE(8, 1, 4)
  POLAR_MLP_CASE(8, 2, 1)
#undef POLAR_MLP_CASE
  return cudaErrorInvalidValue;
}

}  // namespace

int64_t GatherMlpHStride(int64_t num_selected) { return (num_selected + 63) / 64 * 64; }

cudaError_t GatherMlpWorkspaceBytes(const GatherMlpParams& p, size_t* bytes) {
  if (bytes == nullptr) return cudaErrorInvalidValue;
  size_t most = 0;
  if (cudaError_t e = Dispatch(p, Which::kBoth, nullptr, 0, nullptr, &most); e != cudaSuccess) return e;
  // Smaller batches take other tile shapes and split counts: size for the
  // largest need of any batch up to p.rows.
  for (int64_t rows : {int64_t{1}, int64_t{9}, int64_t{17}, int64_t{33}, int64_t{49}}) {
    if (rows >= p.rows) break;
    GatherMlpParams q = p;
    q.rows = rows;
    size_t need = 0;
    if (cudaError_t e = Dispatch(q, Which::kBoth, nullptr, 0, nullptr, &need); e != cudaSuccess) return e;
    most = std::max(most, need);
  }
  *bytes = most;
  return cudaSuccess;
}

cudaError_t GatherMlpFc1Relu(const GatherMlpParams& p, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream) {
  return Dispatch(p, Which::kFc1, workspace, workspace_bytes, stream, nullptr);
}

cudaError_t GatherMlpFc2(const GatherMlpParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  return Dispatch(p, Which::kFc2, workspace, workspace_bytes, stream, nullptr);
}

cudaError_t GatherMlp(const GatherMlpParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  return Dispatch(p, Which::kBoth, workspace, workspace_bytes, stream, nullptr);
}

#if defined(POLAR_GATHER_MLP_TIMELINE)
cudaError_t GatherMlpTimeline(uint64_t* host, bool reset) {
  if (cudaError_t e = cudaMemcpyFromSymbol(host, g_timeline, sizeof(g_timeline)); e != cudaSuccess) return e;
  if (!reset) return cudaSuccess;
  void* device = nullptr;
  if (cudaError_t e = cudaGetSymbolAddress(&device, g_timeline); e != cudaSuccess) return e;
  return cudaMemset(device, 0, sizeof(g_timeline));
}
#endif

}  // namespace polar::kernels::cuda
