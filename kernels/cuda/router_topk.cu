// Router scores and per-sequence head-group top-k: see router_topk.h for what
// and why. How, in short:
//
//  - Scores: cuBLASLt, column-major, computes scoresᵀ [heads, rows] =
//    w [heads, hidden] · xᵀ [hidden, rows]; that is scores [rows, heads]
//    row-major. The bias rides on the GEMM's epilogue (one per output row of
//    the column-major view, i.e. per head). The algorithm is chosen once per
//    row count and kept in the plan.
//  - Top-k: one warp per sequence. Group scores go to shared memory computed
//    exactly as the CPU reference does (same order of operations, no
//    contraction possible: max and plain adds, one IEEE division), so the
//    selection is bit-identical. A group is kept when fewer than keep groups
//    beat it (higher score, or equal score and lower id): a rank, not a sort,
//    so no data-dependent control flow and nothing but compares. The kept
//    groups are written ascending with a ballot per 32 groups.
//  - indptr needs the kept counts of all earlier sequences: every CTA sums
//    them itself (a few hundred integers), so one launch suffices.
#include "kernels/cuda/router_topk.h"
#include "kernels/cuda/warp_mma.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace polar::kernels::cuda {

// ---------------------------------------------------------------------------
// Scores through cuBLASLt
// ---------------------------------------------------------------------------

namespace {

constexpr size_t kCublasWorkspaceBytes = size_t{4} << 20;

cudaError_t ToCudaError(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return cudaSuccess;
    case CUBLAS_STATUS_INVALID_VALUE:
      return cudaErrorInvalidValue;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return cudaErrorNotSupported;
    case CUBLAS_STATUS_ALLOC_FAILED:
      return cudaErrorMemoryAllocation;
    default:
      return cudaErrorUnknown;
  }
}

#define POLAR_RETURN_IF_CUBLAS_ERROR(expr)                                  \
  do {                                                                      \
    if (cublasStatus_t s_ = (expr); s_ != CUBLAS_STATUS_SUCCESS) return ToCudaError(s_); \
  } while (0)

}  // namespace

// What one row count needs: its two matrix layouts and the algorithm chosen
// for each epilogue (with and without bias).
struct RowsEntry {
  int64_t rows = 0;
  cublasLtMatrixLayout_t x_layout = nullptr;       // xᵀ: [hidden, rows], ld hidden
  cublasLtMatrixLayout_t scores_layout = nullptr;  // scoresᵀ: [heads, rows], ld heads
  cublasLtMatmulAlgo_t algo[2] = {};               // [0] no bias, [1] bias
  bool have_algo[2] = {false, false};
};

struct RouterScoresPlan {
  RouterScoresShape shape;
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t desc[2] = {nullptr, nullptr};  // [0] plain, [1] bias epilogue
  cublasLtMatrixLayout_t w_layout = nullptr;          // w as stored: [hidden, heads], ld hidden
  cublasLtMatmulPreference_t preference = nullptr;
  void* workspace = nullptr;  // [kCublasWorkspaceBytes]
  std::vector<RowsEntry> rows;
};

void DestroyRouterScoresPlan(RouterScoresPlan* plan) {
  if (plan == nullptr) return;
  for (RowsEntry& e : plan->rows) {
    cublasLtMatrixLayoutDestroy(e.x_layout);
    cublasLtMatrixLayoutDestroy(e.scores_layout);
  }
  if (plan->preference != nullptr) cublasLtMatmulPreferenceDestroy(plan->preference);
  if (plan->w_layout != nullptr) cublasLtMatrixLayoutDestroy(plan->w_layout);
  for (cublasLtMatmulDesc_t d : plan->desc) {
    if (d != nullptr) cublasLtMatmulDescDestroy(d);
  }
  if (plan->handle != nullptr) cublasLtDestroy(plan->handle);
  cudaFree(plan->workspace);
  delete plan;
}

namespace {

cudaDataType_t InputType(RouterDtype dtype) {
  return dtype == RouterDtype::kBf16 ? CUDA_R_16BF : CUDA_R_16F;
}

cudaError_t InitPlan(RouterScoresPlan* plan) {
  const RouterScoresShape& s = plan->shape;
  POLAR_RETURN_IF_CUBLAS_ERROR(cublasLtCreate(&plan->handle));
  const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
  for (int bias = 0; bias < 2; ++bias) {
    POLAR_RETURN_IF_CUBLAS_ERROR(cublasLtMatmulDescCreate(&plan->desc[bias], CUBLAS_COMPUTE_32F, CUDA_R_32F));
    POLAR_RETURN_IF_CUBLAS_ERROR(cublasLtMatmulDescSetAttribute(plan->desc[bias], CUBLASLT_MATMUL_DESC_TRANSA,
                                                                &transpose, sizeof(transpose)));
    POLAR_RETURN_IF_CUBLAS_ERROR(
        cublasLtMatmulDescSetAttribute(plan->desc[bias], CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof(none)));
    const cublasLtEpilogue_t epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    POLAR_RETURN_IF_CUBLAS_ERROR(cublasLtMatmulDescSetAttribute(plan->desc[bias], CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                                &epilogue, sizeof(epilogue)));
    // The bias has the output's type (fp32), cuBLASLt's default for it.
  }
  POLAR_RETURN_IF_CUBLAS_ERROR(cublasLtMatrixLayoutCreate(&plan->w_layout, InputType(s.dtype), s.hidden,
                                                          s.num_heads, s.hidden));
  POLAR_RETURN_IF_CUBLAS_ERROR(cublasLtMatmulPreferenceCreate(&plan->preference));
  const size_t ws = kCublasWorkspaceBytes;
  POLAR_RETURN_IF_CUBLAS_ERROR(cublasLtMatmulPreferenceSetAttribute(
      plan->preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  return cudaMalloc(&plan->workspace, kCublasWorkspaceBytes);
}

// The entry for a row count, created on first use.
cudaError_t EntryFor(RouterScoresPlan* plan, int64_t rows, RowsEntry** out) {
  for (RowsEntry& e : plan->rows) {
    if (e.rows == rows) {
      *out = &e;
      return cudaSuccess;
    }
  }
  RowsEntry e;
  e.rows = rows;
  const RouterScoresShape& s = plan->shape;
  cublasStatus_t st = cublasLtMatrixLayoutCreate(&e.x_layout, InputType(s.dtype), s.hidden, rows, s.hidden);
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatrixLayoutCreate(&e.scores_layout, CUDA_R_32F, s.num_heads, rows, s.num_heads);
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    cublasLtMatrixLayoutDestroy(e.x_layout);
    return ToCudaError(st);
  }
  plan->rows.push_back(e);
  *out = &plan->rows.back();
  return cudaSuccess;
}

}  // namespace

cudaError_t CreateRouterScoresPlan(const RouterScoresShape& shape, RouterScoresPlan** plan) {
  if (plan == nullptr || shape.hidden <= 0 || shape.num_heads <= 0 || shape.hidden % 8 != 0 ||
      (shape.dtype != RouterDtype::kFp16 && shape.dtype != RouterDtype::kBf16)) {
    return cudaErrorInvalidValue;
  }
  auto* p = new RouterScoresPlan;
  p->shape = shape;
  if (cudaError_t e = InitPlan(p); e != cudaSuccess) {
    DestroyRouterScoresPlan(p);
    return e;
  }
  *plan = p;
  return cudaSuccess;
}

cudaError_t RouterScores(RouterScoresPlan* plan, const void* x, const void* w, const float* bias,
                         float* scores, int64_t rows, cudaStream_t stream) {
  if (plan == nullptr || rows < 0 || rows >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (x == nullptr || w == nullptr || scores == nullptr) return cudaErrorInvalidValue;
  RowsEntry* e = nullptr;
  if (cudaError_t err = EntryFor(plan, rows, &e); err != cudaSuccess) return err;
  const int with_bias = bias != nullptr ? 1 : 0;
  cublasLtMatmulDesc_t desc = plan->desc[with_bias];
  if (with_bias) {
    POLAR_RETURN_IF_CUBLAS_ERROR(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  if (!e->have_algo[with_bias]) {
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    POLAR_RETURN_IF_CUBLAS_ERROR(cublasLtMatmulAlgoGetHeuristic(plan->handle, desc, plan->w_layout, e->x_layout,
                                                                e->scores_layout, e->scores_layout,
                                                                plan->preference, 1, &result, &found));
    if (found == 0) return cudaErrorNotSupported;
    e->algo[with_bias] = result.algo;
    e->have_algo[with_bias] = true;
  }
  const float alpha = 1.0f, beta = 0.0f;
  POLAR_RETURN_IF_CUBLAS_ERROR(cublasLtMatmul(plan->handle, desc, &alpha, w, plan->w_layout, x, e->x_layout, &beta,
                                              scores, e->scores_layout, scores, e->scores_layout,
                                              &e->algo[with_bias], plan->workspace, kCublasWorkspaceBytes,
                                              stream));
  return cudaSuccess;
}

// ---------------------------------------------------------------------------
// Top-k
// ---------------------------------------------------------------------------

namespace {

constexpr int kTopKWarps = 4;  // sequences per CTA
constexpr int kMaxGroups = 2048;

struct TopKArgs {
  const float* scores;        // [num_rows, num_heads]
  const int32_t* score_rows;  // [num_seqs]
  const int32_t* keep;        // [num_seqs] or nullptr (keep all)
  int num_seqs, num_heads, num_groups;
  int reduce;                 // GroupReduce
  int32_t* indptr;            // [num_seqs + 1]
  int32_t* indices;           // [sum of kept]
};

__device__ __forceinline__ int KeptGroups(const TopKArgs& a, int seq) {
  if (a.keep == nullptr) return a.num_groups;
  return min(max(a.keep[seq], 0), a.num_groups);
}

// The CPU reference's GroupScores, operation for operation.
__device__ __forceinline__ float GroupScore(const float* heads, int r, int reduce) {
  float value = reduce == static_cast<int>(GroupReduce::kMax) ? -INFINITY : 0.0f;
  for (int i = 0; i < r; ++i) {
    const float s = isnan(heads[i]) ? -INFINITY : heads[i];
    if (reduce == static_cast<int>(GroupReduce::kMax)) {
      value = value < s ? s : value;  // std::max(value, s)
    } else {
      value = __fadd_rn(value, s);
    }
  }
  return reduce == static_cast<int>(GroupReduce::kMax) ? value : __fdiv_rn(value, static_cast<float>(r));
}

__global__ void __launch_bounds__(kTopKWarps * 32) HeadGroupTopKKernel(const __grid_constant__ TopKArgs a) {
  extern __shared__ float group_scores[];  // [kTopKWarps, num_groups]
  __shared__ int partial[kTopKWarps];
  __shared__ int kept_of_warp[kTopKWarps];
  // Whatever follows (the attention kernel) may become resident now; it
  // waits for this grid before reading the lists.
  warp::LetDependentsStart();
  warp::WaitForPredecessor();
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int first_seq = blockIdx.x * kTopKWarps;

  // Groups kept by all sequences before this CTA's first.
  int before = 0;
  for (int j = threadIdx.x; j < first_seq && j < a.num_seqs; j += blockDim.x) before += KeptGroups(a, j);
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) before += __shfl_xor_sync(0xffffffffu, before, offset);
  if (lane == 0) partial[warp] = before;
  const int seq = first_seq + warp;
  const int kept = seq < a.num_seqs ? KeptGroups(a, seq) : 0;
  if (lane == 0) kept_of_warp[warp] = kept;
  __syncthreads();
  int start = 0;
  for (int w = 0; w < kTopKWarps; ++w) start += partial[w];
  for (int w = 0; w < warp; ++w) start += kept_of_warp[w];
  if (blockIdx.x == 0 && threadIdx.x == 0) a.indptr[0] = 0;
  if (seq >= a.num_seqs) return;
  if (lane == 0) a.indptr[seq + 1] = start + kept;
  int32_t* out = a.indices + start;
  const int groups = a.num_groups;

  if (kept == groups) {
    for (int g = lane; g < groups; g += 32) out[g] = g;
    return;
  }
  if (kept == 0) return;

  // Group scores of this sequence's row; NaN (a mean of +inf and -inf) ranks as -inf.
  float* score = group_scores + warp * groups;
  const int r = a.num_heads / groups;
  const float* row = a.scores + static_cast<int64_t>(a.score_rows[seq]) * a.num_heads;
  for (int g = lane; g < groups; g += 32) {
    const float s = GroupScore(row + g * r, r, a.reduce);
    score[g] = isnan(s) ? -INFINITY : s;
  }
  __syncwarp();

  // Kept: fewer than `kept` groups beat it. Written ascending.
  int written = 0;
  for (int base = 0; base < groups; base += 32) {
    const int g = base + lane;
    bool selected = false;
    if (g < groups) {
      const float mine = score[g];
      int beaten_by = 0;
      // Unrolled so that several shared-memory loads are in flight at once.
#pragma unroll 8
      for (int h = 0; h < groups; ++h) {
        const float other = score[h];
        beaten_by += (other > mine || (other == mine && h < g)) ? 1 : 0;
      }
      selected = beaten_by < kept;
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, selected);
    if (selected) out[written + __popc(ballot & ((1u << lane) - 1u))] = g;
    written += __popc(ballot);
  }
}

}  // namespace

cudaError_t SelectHeadGroupsTopK(const HeadGroupTopKParams& p, cudaStream_t stream) {
  if (p.num_seqs < 0 || p.num_seqs >= (int64_t{1} << 24) || p.num_groups <= 0 || p.num_groups > kMaxGroups ||
      p.num_heads <= 0 || p.num_heads % p.num_groups != 0 || p.num_heads >= (int64_t{1} << 24) ||
      (p.reduce != GroupReduce::kMax && p.reduce != GroupReduce::kMean) || p.indptr == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (p.num_seqs > 0 &&
      (p.indices == nullptr || (!p.keep_all_groups && (p.keep == nullptr || p.scores == nullptr ||
                                                        p.score_rows == nullptr)))) {
    return cudaErrorInvalidValue;
  }
  TopKArgs a;
  a.scores = p.scores;
  a.score_rows = p.score_rows;
  a.keep = p.keep_all_groups ? nullptr : p.keep;
  a.num_seqs = static_cast<int>(p.num_seqs);
  a.num_heads = static_cast<int>(p.num_heads);
  a.num_groups = static_cast<int>(p.num_groups);
  a.reduce = static_cast<int>(p.reduce);
  a.indptr = p.indptr;
  a.indices = p.indices;

  int device = 0, major = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device); e != cudaSuccess) {
    return e;
  }
  cudaLaunchAttribute overlap[1];
  overlap[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(std::max<int64_t>(1, (p.num_seqs + kTopKWarps - 1) / kTopKWarps)));
  config.blockDim = dim3(kTopKWarps * 32);
  config.dynamicSmemBytes = sizeof(float) * kTopKWarps * static_cast<size_t>(p.num_groups);
  config.stream = stream;
  config.attrs = overlap;
  config.numAttrs = major >= 9 ? 1 : 0;
  return cudaLaunchKernelEx(&config, HeadGroupTopKKernel, a);
}

}  // namespace polar::kernels::cuda
