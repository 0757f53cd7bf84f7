// Microbenchmark of the sparse MLP's gather-GEMM pair (kernels/cuda/gather_mlp)
// against cuBLAS dense on the card it runs on: the card's device-to-device
// copy bandwidth first, then OPT-6.7B's MLP (hidden 4096, ffn 16384) at batch
// 1/16/64 and density 1.0 down to 0.1 (k neurons, a multiple of 128 as the
// paper's router configs use). Prints one markdown table row per
// measurement:
//   - cuBLAS dense: cuBLASLt fc1 with its bias+ReLU epilogue, then fc2 with
//     its bias epilogue (the fastest of cuBLASLt's first 4 heuristic
//     algorithms per GEMM), once per batch;
//   - Polar: fc1+ReLU+fc2 through GatherMlp over k random neurons (dense:
//     no index list), and fc1 and fc2 alone;
// each as the median time of single CUDA-event-timed launches after warm-up
// (host launch cost included) and the time per launch inside a CUDA graph of
// 16 launches (how the engine runs a decode step); weight bytes read / graph
// time against the copy bandwidth; and the issue-5 target
// 1.25 * d * cuBLAS dense + 5 us checked on both times.
//
// L2 (50 MB on an H100) is defeated by rotating every launch over copies of
// the weights (>= 1 GiB and >= 20x L2 in all), 8 random neuron selections and
// 8 inputs.
//
//   gather_mlp_bench [--dtype fp16|bf16] [--batches 1,16,64] [--densities 1,0.75,0.5,0.3,0.2,0.1]
//       [--hidden 4096] [--ffn 16384] [--warmup 10] [--iters 50]
//       [--splits FC1,FC2]   (force the reduction splits of the Polar kernels; 0 = automatic)
//       [--tile-rows 64|128] (force the Polar kernels' output rows per CTA; 0 = automatic)
//       [--warp-layout 1|2|4] (force the warps sharing each output row; 0 = automatic)
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/mlp_bench_inputs.h"
#include "kernels/cuda/gather_mlp.h"

namespace polar::bench {
namespace {

using polar::kernels::cuda::GatherMlp;
using polar::kernels::cuda::GatherMlpFc1Relu;
using polar::kernels::cuda::GatherMlpFc2;
using polar::kernels::cuda::GatherMlpHStride;
using polar::kernels::cuda::GatherMlpParams;
using polar::kernels::cuda::GatherMlpWorkspaceBytes;
using polar::kernels::cuda::MlpDtype;

void CheckLt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cuBLASLt error %s: %d\n", what, static_cast<int>(s));
    std::exit(1);
  }
}
#define CHECK_LT(expr) CheckLt((expr), #expr)

struct Options {
  MlpDtype dtype = MlpDtype::kFp16;
  std::vector<int> batches = {1, 16, 64};
  std::vector<double> densities = {1.0, 0.75, 0.5, 0.3, 0.2, 0.1};
  int hidden = 4096, ffn = 16384;
  int warmup = 10, iters = 50;
  int fc1_splits = 0, fc2_splits = 0;
  int tile_rows = 0;
  int warp_layout = 0;

  // 3 graph replays of warm-up, the median of the next 9 (the header says so).
  TimingRuns runs() const { return {warmup, iters, 3, 9}; }
};

// cuBLASLt dense MLP: h = ReLU(x w1ᵀ + b1), y = h w2tᵀᵀ + b2, column-major
// views of the row-major tensors (hᵀ = w1 · xᵀ, yᵀ = w2tᵀ · hᵀ).
class CublasDenseMlp {
 public:
  CublasDenseMlp(const Options& o, int rows, void* workspace, size_t workspace_bytes)
      : o_(o), rows_(rows), workspace_(workspace), workspace_bytes_(workspace_bytes) {
    CHECK_LT(cublasLtCreate(&handle_));
    const cudaDataType_t t = o.dtype == MlpDtype::kBf16 ? CUDA_R_16BF : CUDA_R_16F;
    const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
    for (int i = 0; i < 2; ++i) {
      CHECK_LT(cublasLtMatmulDescCreate(&desc_[i], CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t ta = i == 0 ? transpose : none;
      CHECK_LT(cublasLtMatmulDescSetAttribute(desc_[i], CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
      CHECK_LT(cublasLtMatmulDescSetAttribute(desc_[i], CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof(none)));
      const cublasLtEpilogue_t epilogue = i == 0 ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
      CHECK_LT(cublasLtMatmulDescSetAttribute(desc_[i], CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    }
    // fc1: A = w1 stored [hidden, ffn] col-major (op T), B = xᵀ [hidden, rows], D = hᵀ [ffn, rows].
    CHECK_LT(cublasLtMatrixLayoutCreate(&a_[0], t, o.hidden, o.ffn, o.hidden));
    CHECK_LT(cublasLtMatrixLayoutCreate(&b_[0], t, o.hidden, rows, o.hidden));
    CHECK_LT(cublasLtMatrixLayoutCreate(&d_[0], t, o.ffn, rows, o.ffn));
    // fc2: A = w2t stored [hidden, ffn] col-major (op N), B = hᵀ [ffn, rows], D = yᵀ [hidden, rows].
    CHECK_LT(cublasLtMatrixLayoutCreate(&a_[1], t, o.hidden, o.ffn, o.hidden));
    CHECK_LT(cublasLtMatrixLayoutCreate(&b_[1], t, o.ffn, rows, o.ffn));
    CHECK_LT(cublasLtMatrixLayoutCreate(&d_[1], t, o.hidden, rows, o.hidden));
    CHECK_LT(cublasLtMatmulPreferenceCreate(&preference_));
    CHECK_LT(cublasLtMatmulPreferenceSetAttribute(preference_, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &workspace_bytes_, sizeof(workspace_bytes_)));
  }
  ~CublasDenseMlp() {
    for (int i = 0; i < 2; ++i) {
      cublasLtMatrixLayoutDestroy(a_[i]);
      cublasLtMatrixLayoutDestroy(b_[i]);
      cublasLtMatrixLayoutDestroy(d_[i]);
      cublasLtMatmulDescDestroy(desc_[i]);
    }
    cublasLtMatmulPreferenceDestroy(preference_);
    cublasLtDestroy(handle_);
  }

  // Picks, per GEMM, the fastest of cuBLASLt's first 4 heuristic algorithms.
  void Tune(const std::vector<MlpWeights>& sets, const std::vector<void*>& xs, void* h, void* y) {
    for (int gemm = 0; gemm < 2; ++gemm) {
      SetBias(gemm, gemm == 0 ? sets[0].b1 : sets[0].b2);
      cublasLtMatmulHeuristicResult_t results[4];
      int found = 0;
      CHECK_LT(cublasLtMatmulAlgoGetHeuristic(handle_, desc_[gemm], a_[gemm], b_[gemm], d_[gemm], d_[gemm],
                                              preference_, 4, results, &found));
      double best = 1e30;
      for (int i = 0; i < found; ++i) {
        algo_[gemm] = results[i].algo;
        const Timing t = Time(o_.runs(), [&](int j, cudaStream_t s) {
          RunGemm(gemm, sets[j % sets.size()], xs[j % xs.size()], h, y, s);
        });
        if (t.launch_us < best) {
          best = t.launch_us;
          best_algo_[gemm] = results[i].algo;
        }
      }
      if (found == 0) {
        std::fprintf(stderr, "cuBLASLt: no algorithm for GEMM %d\n", gemm);
        std::exit(1);
      }
      algo_[gemm] = best_algo_[gemm];
    }
  }

  void Run(const MlpWeights& w, void* x, void* h, void* y, cudaStream_t stream) {
    RunGemm(0, w, x, h, y, stream);
    RunGemm(1, w, x, h, y, stream);
  }

 private:
  void SetBias(int gemm, void* bias) {
    CHECK_LT(cublasLtMatmulDescSetAttribute(desc_[gemm], CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  void RunGemm(int gemm, const MlpWeights& w, void* x, void* h, void* y, cudaStream_t stream) {
    SetBias(gemm, gemm == 0 ? w.b1 : w.b2);
    const float alpha = 1.0f, beta = 0.0f;
    const void* a = gemm == 0 ? w.w1 : w.w2t;
    const void* b = gemm == 0 ? x : h;
    void* d = gemm == 0 ? h : y;
    CHECK_LT(cublasLtMatmul(handle_, desc_[gemm], &alpha, a, a_[gemm], b, b_[gemm], &beta, d, d_[gemm], d, d_[gemm],
                            &algo_[gemm], workspace_, workspace_bytes_, stream));
  }

  const Options& o_;
  int rows_;
  void* workspace_;
  size_t workspace_bytes_;
  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t desc_[2] = {};
  cublasLtMatrixLayout_t a_[2] = {}, b_[2] = {}, d_[2] = {};
  cublasLtMatmulPreference_t preference_ = nullptr;
  cublasLtMatmulAlgo_t algo_[2] = {}, best_algo_[2] = {};
};

void RunBatch(const Options& o, int rows, const std::vector<MlpWeights>& sets, double copy_bw) {
  const bool bf16 = o.dtype == MlpDtype::kBf16;
  constexpr int kInputs = 8, kSelections = 8;
  std::vector<void*> xs;
  for (int i = 0; i < kInputs; ++i) xs.push_back(Random16(size_t(rows) * o.hidden, 500 + i, bf16, 1.0f));
  void *h = nullptr, *y = nullptr, *cublas_ws = nullptr;
  CHECK(cudaMalloc(&h, size_t(rows) * o.ffn * 2));
  CHECK(cudaMalloc(&y, size_t(rows) * o.hidden * 2));
  const size_t cublas_ws_bytes = size_t{32} << 20;
  CHECK(cudaMalloc(&cublas_ws, cublas_ws_bytes));

  CublasDenseMlp cublas(o, rows, cublas_ws, cublas_ws_bytes);
  cublas.Tune(sets, xs, h, y);
  const Timing dense = Time(o.runs(), [&](int i, cudaStream_t s) {
    cublas.Run(sets[i % sets.size()], xs[i % kInputs], h, y, s);
  });
  const double dense_bytes = 2.0 * o.ffn * o.hidden * 2;
  std::printf("| %d | cuBLAS dense (fc1+bias+ReLU, fc2+bias) | 1.000 | %d | %.1f | %.1f | - | - | - | %.0f | %.3f | baseline |\n",
              rows, o.ffn, dense.launch_us, dense.graph_us, dense_bytes / (dense.graph_us * 1e-6) / 1e9,
              dense_bytes / (dense.graph_us * 1e-6) / copy_bw);
  std::fflush(stdout);

  std::mt19937 rng(rows);
  int last_k = -1;
  for (double density : o.densities) {
    const bool dense_k = density >= 1.0;
    const int k = dense_k ? o.ffn : SelectedNeurons(density, o.ffn);
    if (k == last_k) continue;
    last_k = k;
    std::vector<int32_t*> selections;
    for (int s = 0; s < (dense_k ? 0 : kSelections); ++s) selections.push_back(Upload(RandomNeurons(o.ffn, k, rng)));
    void* hk = nullptr;
    CHECK(cudaMalloc(&hk, size_t(rows) * GatherMlpHStride(k) * 2));
    GatherMlpParams p;
    p.dtype = o.dtype;
    p.h = hk;
    p.y = y;
    p.rows = rows;
    p.hidden = o.hidden;
    p.ffn = o.ffn;
    p.num_selected = k;
    p.fc1_splits = o.fc1_splits;
    p.fc2_splits = o.fc2_splits;
    p.tile_rows = o.tile_rows;
    p.warp_layout = o.warp_layout;
    size_t ws_bytes = 0;
    CHECK(GatherMlpWorkspaceBytes(p, &ws_bytes));
    void* ws = nullptr;
    CHECK(cudaMalloc(&ws, ws_bytes));
    CHECK(cudaMemset(ws, 0, ws_bytes));
    auto use = [&](int i) {
      const MlpWeights& w = sets[i % sets.size()];
      p.x = xs[i % kInputs];
      p.w1 = w.w1;
      p.b1 = w.b1;
      p.w2t = w.w2t;
      p.b2 = w.b2;
      p.indices = dense_k ? nullptr : selections[(i / sets.size()) % kSelections];
    };
    const Timing pair = Time(o.runs(), [&](int i, cudaStream_t s) {
      use(i);
      CHECK(GatherMlp(p, ws, ws_bytes, s));
    });
    const Timing fc1 = Time(o.runs(), [&](int i, cudaStream_t s) {
      use(i);
      CHECK(GatherMlpFc1Relu(p, ws, ws_bytes, s));
    });
    const Timing fc2 = Time(o.runs(), [&](int i, cudaStream_t s) {
      use(i);
      CHECK(GatherMlpFc2(p, ws, ws_bytes, s));
    });
    // Sanity: the last output holds no NaN/inf.
    const size_t bad = CountNonFinite16(y, size_t(rows) * o.hidden, bf16);
    const double d = double(k) / o.ffn;
    const double target = 1.25 * d * dense.launch_us + 5.0, graph_target = 1.25 * d * dense.graph_us + 5.0;
    const double bytes = 2.0 * k * o.hidden * 2;
    std::printf("| %d | Polar gather-GEMM%s | %.3f | %d | %.1f | %.1f | %.1f / %.1f | %.0f / %.0f | %.2f | %.0f | %.3f | %s / %s%s |\n",
                rows, dense_k ? " (no index list)" : "", d, k, pair.launch_us, pair.graph_us, fc1.graph_us,
                fc2.graph_us, target, graph_target, dense.graph_us / pair.graph_us,
                bytes / (pair.graph_us * 1e-6) / 1e9, bytes / (pair.graph_us * 1e-6) / copy_bw,
                pair.launch_us <= target ? "ok" : "MISS", pair.graph_us <= graph_target ? "ok" : "MISS",
                bad ? " (NON-FINITE OUTPUT)" : "");
    std::fflush(stdout);
    for (int32_t* s : selections) CHECK(cudaFree(s));
    CHECK(cudaFree(hk));
    CHECK(cudaFree(ws));
  }
  for (void* x : xs) CHECK(cudaFree(x));
  CHECK(cudaFree(h));
  CHECK(cudaFree(y));
  CHECK(cudaFree(cublas_ws));
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&] { return FlagValue(argc, argv, &i); };
    if (arg == "--dtype") {
      o.dtype = value() == "bf16" ? MlpDtype::kBf16 : MlpDtype::kFp16;
    } else if (arg == "--batches") {
      o.batches = ParseInts(value());
    } else if (arg == "--densities") {
      o.densities = ParseDoubles(value());
    } else if (arg == "--hidden") {
      o.hidden = std::atoi(value().c_str());
    } else if (arg == "--ffn") {
      o.ffn = std::atoi(value().c_str());
    } else if (arg == "--warmup") {
      o.warmup = std::atoi(value().c_str());
    } else if (arg == "--iters") {
      o.iters = std::atoi(value().c_str());
    } else if (arg == "--warp-layout") {
      o.warp_layout = std::atoi(value().c_str());
    } else if (arg == "--tile-rows") {
      o.tile_rows = std::atoi(value().c_str());
    } else if (arg == "--splits") {
      const std::vector<std::string> parts = SplitCommas(value());
      o.fc1_splits = std::atoi(parts[0].c_str());
      o.fc2_splits = parts.size() > 1 ? std::atoi(parts[1].c_str()) : 0;
    } else {
      UnknownArgument(arg);
    }
  }
  return o;
}

int Main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const double copy_bw = CopyBandwidth(5, 20);
  const bool bf16 = o.dtype == MlpDtype::kBf16;
  std::vector<MlpWeights> weights = MakeMlpWeightCopies(o.hidden, o.ffn, bf16, prop.l2CacheSize);
  const int sets = static_cast<int>(weights.size());
  const double set_bytes = 2.0 * o.ffn * o.hidden * 2;
  std::printf("device: %s, %d SMs, L2 %.0f MB; MLP hidden %d, ffn %d, %s; %d weight copies (%.2f GB) rotated; "
              "%d warm-up + %d timed launches (median); graph: 16 launches per replay, median of 9; splits %s; "
              "tile rows %s; warp layout %s\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6, o.hidden, o.ffn, bf16 ? "bf16" : "fp16",
              sets, sets * set_bytes / 1e9, o.warmup, o.iters,
              o.fc1_splits == 0 && o.fc2_splits == 0
                  ? "automatic"
                  : (std::to_string(o.fc1_splits) + "," + std::to_string(o.fc2_splits) + " (forced)").c_str(),
              o.tile_rows == 0 ? "automatic" : std::to_string(o.tile_rows).c_str(),
              o.warp_layout == 0 ? "automatic" : (std::to_string(o.warp_layout) + " warps per row").c_str());
  std::printf("copy bandwidth (device to device, read + write): %.0f GB/s\n\n", copy_bw / 1e9);
  std::printf("| batch | kernel | density | neurons | launch us | graph us | fc1 / fc2 alone, graph us | "
              "target us (launch / graph) | speed-up vs cuBLAS (graph) | weight GB/s (graph) | of copy BW | vs target |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int rows : o.batches) RunBatch(o, rows, weights, copy_bw);
  FreeMlpWeights(weights);
  return 0;
}

}  // namespace
}  // namespace polar::bench

int main(int argc, char** argv) { return polar::bench::Main(argc, argv); }
