// Sparse MLP of ReLU models on the GPU (Polar Sparsity's selective GEMM, OPT):
// the MLP computed over one selected set of neurons for the whole batch.
// CPU reference: kernels/cpu/gather_mlp.h (same weight layouts and meaning).
// Measured against cuBLAS and PyTorch: docs/performance-kernels.md.
//
//   fc1: h[m, i] = ReLU(x[m] · w1[idx[i]] + b1[idx[i]])            i < k
//   fc2: y[m]  (+)= Σ_i h[m, i] · w2t[idx[i]] + b2
//
// w1 is fc1.weight as stored ([ffn, hidden], nn.Linear layout) and w2t is
// fc2.weightᵀ ([ffn, hidden]), both neuron-major, so a selected neuron is one
// contiguous row of each and the kernels read exactly k rows of each: the
// time falls with k. Inputs fp16 or bf16, fp32 accumulation on tensor cores
// (mma.sync, sm_80 and later), h and y in the input type. Decode batches:
// 1 to 64 rows.
//
// Each GEMM splits its reduction over several CTAs when its output tiles
// alone would not fill the GPU (few neurons, or fc2's narrow output); the
// last CTA of a tile adds the fp32 partials in a fixed order, so results are
// deterministic run to run. That needs tile counters in the workspace:
// zero the workspace once after allocating it; every launch leaves its
// counters at zero again. No allocation and no host synchronisation inside a
// launch (CUDA-graph safe).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace polar::kernels::cuda {

enum class MlpDtype : int { kFp16, kBf16 };

struct GatherMlpParams {
  MlpDtype dtype = MlpDtype::kFp16;  // of x, w1, b1, w2t, b2, h and y
  const void* x = nullptr;    // [rows, hidden]
  const void* w1 = nullptr;   // [ffn, hidden]
  const void* b1 = nullptr;   // [ffn] or nullptr (no bias)
  const void* w2t = nullptr;  // [ffn, hidden]
  const void* b2 = nullptr;   // [hidden] or nullptr (no bias)
  // [num_selected] selected neuron ids, distinct, any order (SelectMlpNeurons
  // writes them ascending); nullptr: all ffn neurons in order (a dense MLP
  // through the same kernels; then num_selected must be ffn).
  const int32_t* indices = nullptr;
  // [rows, GatherMlpHStride(num_selected)] fc1's output and fc2's input;
  // fc1 writes the padding columns past num_selected as zeros, and fc2
  // expects them zero.
  void* h = nullptr;
  void* y = nullptr;          // [rows, hidden]
  bool accumulate = false;    // fc2: y += ... (e.g. onto the residual) instead of y = ...
  int64_t rows = 0;           // 0 to 64
  int64_t hidden = 0;         // a multiple of 64
  int64_t ffn = 0;
  int64_t num_selected = 0;   // k, 0 to ffn
  // Reduction splits of fc1 and fc2; 0 chooses them from the shape and the
  // device (the default; set only to experiment, e.g. in the benchmark).
  int fc1_splits = 0;
  int fc2_splits = 0;
  // Output rows per CTA, 64 or 128; 0 chooses (experiments only, like the splits).
  int tile_rows = 0;
  // How many of a CTA's 4 warps share each output row, splitting every
  // reduction step between them: 1, 2 or 4 (64-row tiles only for 2 and 4);
  // 0 chooses (experiments only, like the splits).
  int warp_layout = 0;
};

// Row stride of h in elements: num_selected rounded up to 64.
int64_t GatherMlpHStride(int64_t num_selected);

// Bytes of device workspace the launches need, from the shape fields of p
// (grows with rows and hidden; depends on the current device's
// multiprocessor count). Sizing for the largest rows covers fewer rows.
cudaError_t GatherMlpWorkspaceBytes(const GatherMlpParams& p, size_t* bytes);

// Enqueue fc1 (+ bias, ReLU) into h, fc2 (+ bias, accumulate) into y, or
// both, on stream. workspace: device memory of at least the size above,
// 256-byte aligned, zeroed once after allocation. Returns
// cudaErrorInvalidValue for unsupported shapes or a small workspace. All
// pointers 16-byte aligned.
cudaError_t GatherMlpFc1Relu(const GatherMlpParams& p, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream);
cudaError_t GatherMlpFc2(const GatherMlpParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream);
// Both; fc2 then reads its weights while fc1 finishes (it is launched as a
// programmatic dependent of fc1 on Hopper).
cudaError_t GatherMlp(const GatherMlpParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace polar::kernels::cuda
