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
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/router_topk.h"

namespace {

using polar::kernels::cuda::CreateRouterScoresPlan;
using polar::kernels::cuda::DestroyRouterScoresPlan;
using polar::kernels::cuda::GroupReduce;
using polar::kernels::cuda::HeadGroupTopKParams;
using polar::kernels::cuda::RouterDtype;
using polar::kernels::cuda::RouterScores;
using polar::kernels::cuda::RouterScoresPlan;
using polar::kernels::cuda::SelectHeadGroupsTopK;

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}
#define CHECK(expr) Check((expr), #expr)

__global__ void FillRandom(uint16_t* out, size_t n, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    const float u = ((static_cast<float>(x >> 40) + 0.5f) * (2.0f / 16777216.0f) - 1.0f) * scale;
    const __half h = __float2half_rn(u);
    std::memcpy(&out[i], &h, 2);
  }
}

void* RandomHalf(size_t elems, uint64_t seed, float scale) {
  void* p = nullptr;
  CHECK(cudaMalloc(&p, elems * 2));
  FillRandom<<<256, 256>>>(static_cast<uint16_t*>(p), elems, seed, scale);
  CHECK(cudaGetLastError());
  return p;
}

template <typename T>
T* Upload(const std::vector<T>& v) {
  T* d = nullptr;
  CHECK(cudaMalloc(&d, std::max<size_t>(1, v.size()) * sizeof(T)));
  if (!v.empty()) CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

double Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Options {
  std::vector<int> batches = {16, 64, 128};
  int warmup = 20, iters = 100;
};

struct Timing {
  double launch_us, graph_us;
};

Timing Time(const Options& o, const std::function<void(int, cudaStream_t)>& launch) {
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    CHECK(cudaEventRecord(start, stream));
    launch(i, stream);
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CHECK(cudaEventElapsedTime(&t, start, stop));
    if (i >= o.warmup) ms.push_back(t);
  }
  constexpr int kGraphLaunches = 16;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kGraphLaunches; ++i) launch(i, stream);
  CHECK(cudaStreamEndCapture(stream, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  std::vector<float> graph_ms;
  for (int i = 0; i < 3 + 15; ++i) {
    CHECK(cudaEventRecord(start, stream));
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CHECK(cudaEventElapsedTime(&t, start, stop));
    if (i >= 3) graph_ms.push_back(t / kGraphLaunches);
  }
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  CHECK(cudaStreamDestroy(stream));
  return {Median(ms) * 1e3, Median(graph_ms) * 1e3};
}

struct Model {
  const char* name;
  int hidden, heads, groups, keep;
};

void RunShape(const Options& o, const Model& m, int batch, size_t l2_bytes) {
  const size_t w_bytes = size_t(m.heads) * m.hidden * 2;
  const int copies = static_cast<int>(std::max<size_t>(8, (2 * l2_bytes + w_bytes - 1) / w_bytes));
  std::vector<void*> ws, xs;
  for (int i = 0; i < copies; ++i) ws.push_back(RandomHalf(size_t(m.heads) * m.hidden, 100 + i, 0.02f));
  for (int i = 0; i < 8; ++i) xs.push_back(RandomHalf(size_t(batch) * m.hidden, 900 + i, 1.0f));
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
  const Timing gemm = Time(o, score);
  const Timing select = Time(o, topk);
  const Timing both = Time(o, [&](int i, cudaStream_t s) {
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

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i], value = argv[i + 1];
    if (arg == "--batches") {
      o.batches.clear();
      for (size_t pos = 0; pos <= value.size();) {
        size_t comma = value.find(',', pos);
        if (comma == std::string::npos) comma = value.size();
        o.batches.push_back(std::atoi(value.substr(pos, comma - pos).c_str()));
        pos = comma + 1;
      }
    } else if (arg == "--warmup") {
      o.warmup = std::atoi(value.c_str());
    } else if (arg == "--iters") {
      o.iters = std::atoi(value.c_str());
    } else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      return 2;
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
