// Microbenchmark of the head routers on the GPU (kernels/cuda/router_topk):
// the scores GEMM (cuBLASLt, bias fused), the per-sequence group top-k, and
// both in a row, for OPT-66B (hidden 9216, 72 heads = 72 groups, keep 21 =
// density 0.3) and LLaMA-3-8B (hidden 4096, 32 query heads in 8 groups, keep
// 5 = density 0.625) at batch 16/64/128, fp16. Prints one markdown row per
// shape: median time of single CUDA-event-timed launches after warm-up (host
// launch cost included) and the time per launch inside a CUDA graph of 16
// launches. Router weights and inputs rotate over copies (>= 2x L2 of
// weights) so L2 holds nothing useful from the launch before.
//
//   router_topk_bench [--batches 16,64,128] [--warmup 20] [--iters 100]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "kernels/cuda/router_topk.h"

namespace polar::bench {
namespace {

using polar::kernels::cuda::CreateRouterScoresPlan;
using polar::kernels::cuda::DestroyRouterScoresPlan;
using polar::kernels::cuda::GroupReduce;
using polar::kernels::cuda::HeadGroupTopKParams;
using polar::kernels::cuda::RouterDtype;
using polar::kernels::cuda::RouterScores;
using polar::kernels::cuda::RouterScoresPlan;
using polar::kernels::cuda::SelectHeadGroupsTopK;

struct Options {
  std::vector<int> batches = {16, 64, 128};
  int warmup = 20, iters = 100;

  // 3 graph replays of warm-up, the median of the next 15 (the header says so).
  TimingRuns runs() const { return {warmup, iters, 3, 15}; }
};

struct Model {
  const char* name;
  int hidden, heads, groups, keep;
};

void RunShape(const Options& o, const Model& m, int batch, size_t l2_bytes) {
  const size_t w_bytes = size_t(m.heads) * m.hidden * 2;
  const int copies = static_cast<int>(std::max<size_t>(8, (2 * l2_bytes + w_bytes - 1) / w_bytes));
  std::vector<void*> ws, xs;
  for (int i = 0; i < copies; ++i) ws.push_back(Random16(size_t(m.heads) * m.hidden, 100 + i, /*bf16=*/false, 0.02f));
  for (int i = 0; i < 8; ++i) xs.push_back(Random16(size_t(batch) * m.hidden, 900 + i, /*bf16=*/false, 1.0f));
  float* bias = nullptr;
  std::vector<float> bias_host(m.heads);
  for (int h = 0; h < m.heads; ++h) bias_host[h] = 0.01f * ((h * 37) % 11 - 5);
  bias = Upload(bias_host);
  float* scores = nullptr;
  CHECK(cudaMalloc(&scores, sizeof(float) * batch * m.heads));
  std::vector<int32_t> rows(batch), keep(batch, m.keep);
  for (int s = 0; s < batch; ++s) rows[s] = s;
  int32_t* d_rows = Upload(rows);
  int32_t* d_keep = Upload(keep);
  int32_t *indptr = nullptr, *indices = nullptr;
  CHECK(cudaMalloc(&indptr, sizeof(int32_t) * (batch + 1)));
  CHECK(cudaMalloc(&indices, sizeof(int32_t) * batch * m.groups));

  RouterScoresPlan* plan = nullptr;
  CHECK(CreateRouterScoresPlan({RouterDtype::kFp16, m.hidden, m.heads}, &plan));
  HeadGroupTopKParams p;
  p.scores = scores;
  p.score_rows = d_rows;
  p.keep = d_keep;
  p.num_seqs = batch;
  p.num_heads = m.heads;
  p.num_groups = m.groups;
  p.reduce = GroupReduce::kMax;
  p.indptr = indptr;
  p.indices = indices;
  auto score = [&](int i, cudaStream_t s) {
    CHECK(RouterScores(plan, xs[i % xs.size()], ws[i % ws.size()], bias, scores, batch, s));
  };
  auto topk = [&](int, cudaStream_t s) { CHECK(SelectHeadGroupsTopK(p, s)); };
  const Timing gemm = Time(o.runs(), score);
  const Timing select = Time(o.runs(), topk);
  const Timing both = Time(o.runs(), [&](int i, cudaStream_t s) {
    score(i, s);
    topk(i, s);
  });
  int32_t total = 0;
  CHECK(cudaMemcpy(&total, indptr + batch, sizeof(total), cudaMemcpyDeviceToHost));
  std::printf("| %s | %d | %d of %d | %.1f / %.1f | %.1f / %.1f | %.1f / %.1f |%s\n", m.name, batch, m.keep,
              m.groups, gemm.launch_us, gemm.graph_us, select.launch_us, select.graph_us, both.launch_us,
              both.graph_us, total == batch * m.keep ? "" : " (WRONG LIST LENGTH)");
  std::fflush(stdout);
  DestroyRouterScoresPlan(plan);
  for (void* w : ws) CHECK(cudaFree(w));
  for (void* x : xs) CHECK(cudaFree(x));
  CHECK(cudaFree(bias));
  CHECK(cudaFree(scores));
  CHECK(cudaFree(d_rows));
  CHECK(cudaFree(d_keep));
  CHECK(cudaFree(indptr));
  CHECK(cudaFree(indices));
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i], value = argv[i + 1];
    if (arg == "--batches") {
      o.batches = ParseInts(value);
    } else if (arg == "--warmup") {
      o.warmup = std::atoi(value.c_str());
    } else if (arg == "--iters") {
      o.iters = std::atoi(value.c_str());
    } else {
      UnknownArgument(arg);
    }
  }
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %.0f MB; fp16 router inputs and weights, fp32 scores; %d warm-up + %d timed "
              "launches (median); graph: 16 launches per replay, median of 15\n\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6, o.warmup, o.iters);
  std::printf("| model | batch | groups kept | scores GEMM us (launch / graph) | top-k us (launch / graph) | "
              "both us (launch / graph) |\n|---|---|---|---|---|---|\n");
  const Model models[] = {{"OPT-66B (9216 -> 72 heads)", 9216, 72, 72, 21},
                          {"LLaMA-3-8B (4096 -> 32 heads, 8 groups)", 4096, 32, 8, 5}};
  for (const Model& m : models) {
    for (int batch : o.batches) RunShape(o, m, batch, prop.l2CacheSize);
  }
  return 0;
}

}  // namespace
}  // namespace polar::bench

int main(int argc, char** argv) { return polar::bench::Main(argc, argv); }
