// Where the time of one gather-GEMM pair goes, CTA by CTA: the kernels built
// with POLAR_GATHER_MLP_TIMELINE (kernels/cuda/gather_mlp_timeline.h) record
// the global timer when each CTA starts, passes griddepcontrol.wait, has its
// first tiles, finishes its steps, has counted its partial and ends. After a
// warm-up, the pair runs inside a CUDA graph of 16 pairs (the steady state of
// back-to-back layers, programmatic overlap included); the last pair's
// records are printed relative to its fc1's first CTA start: minimum, median
// and maximum over the CTAs of each kernel. OPT-6.7B MLP shapes, fp16,
// inputs made as gather_mlp_bench makes them (mlp_bench_inputs.h).
//
//   gather_mlp_timeline [--batches 1,64] [--densities 0.1,0.3] [--warp-layout 0|1|2|4]
#include "bench/bench_util.h"
#include "bench/mlp_bench_inputs.h"
#include "kernels/cuda/gather_mlp.h"
#include "kernels/cuda/gather_mlp_timeline.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace polar::bench {
namespace {

using kernels::cuda::GatherMlp;
using kernels::cuda::GatherMlpHStride;
using kernels::cuda::GatherMlpParams;
using kernels::cuda::GatherMlpTimeline;
using kernels::cuda::GatherMlpWorkspaceBytes;
using kernels::cuda::kTimelineEvents;
using kernels::cuda::kTimelineMaxCtas;

constexpr int kHidden = 4096, kFfn = 16384, kPairsPerGraph = 16;

struct Options {
  std::vector<int> batches = {1, 64};
  std::vector<double> densities = {0.1, 0.3};
  int warp_layout = 0;
};

// One kernel's records (CTAs that started), in us after `zero`.
void PrintKernel(const char* name, const uint64_t* records, uint64_t zero) {
  static const char* kEvents[] = {"start", "waited", "first tiles", "steps done", "counted", "end"};
  int ctas = 0;
  while (ctas < kTimelineMaxCtas && records[ctas * kTimelineEvents] != 0) ++ctas;
  std::vector<int> sms;
  for (int c = 0; c < ctas; ++c) sms.push_back(static_cast<int>(records[c * kTimelineEvents + 6]));
  std::sort(sms.begin(), sms.end());
  const int distinct_sms = static_cast<int>(std::unique(sms.begin(), sms.end()) - sms.begin());
  std::printf("%s: %d CTAs on %d SMs\n", name, ctas, distinct_sms);
  for (int e = 0; e < 6; ++e) {
    std::vector<double> t;
    for (int c = 0; c < ctas; ++c) {
      uint64_t v = records[c * kTimelineEvents + e];
      if (e == 4 && v == 0) v = records[c * kTimelineEvents + 3];  // no splits: counted = done
      if (v != 0) t.push_back((static_cast<double>(v) - static_cast<double>(zero)) / 1000.0);
    }
    if (t.empty()) continue;
    std::sort(t.begin(), t.end());
    std::printf("  %-12s min %7.2f  median %7.2f  max %7.2f us\n", kEvents[e], t.front(), t[t.size() / 2], t.back());
  }
}

void Run(const Options& o, int rows, double density, const std::vector<MlpWeights>& weights) {
  void* x = Random16(size_t(rows) * kHidden, 99, false, 1.0f);
  const int k = SelectedNeurons(density, kFfn);
  std::mt19937 rng(rows);
  int32_t* indices = Upload(RandomNeurons(kFfn, k, rng));
  void *h = nullptr, *y = nullptr, *ws = nullptr;
  CHECK(cudaMalloc(&h, size_t(rows) * GatherMlpHStride(k) * 2));
  CHECK(cudaMalloc(&y, size_t(rows) * kHidden * 2));
  GatherMlpParams p;
  p.x = x;
  p.indices = indices;
  p.h = h;
  p.y = y;
  p.rows = rows;
  p.hidden = kHidden;
  p.ffn = kFfn;
  p.num_selected = k;
  p.warp_layout = o.warp_layout;
  size_t ws_bytes = 0;
  CHECK(GatherMlpWorkspaceBytes(p, &ws_bytes));
  CHECK(cudaMalloc(&ws, ws_bytes));
  CHECK(cudaMemset(ws, 0, ws_bytes));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto pair = [&](int i) {
    const MlpWeights& w = weights[i % weights.size()];
    p.w1 = w.w1;
    p.b1 = w.b1;
    p.w2t = w.w2t;
    p.b2 = w.b2;
    CHECK(GatherMlp(p, ws, ws_bytes, stream));
  };
  cudaGraph_t graph;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kPairsPerGraph; ++i) pair(i);
  CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 5; ++i) CHECK(cudaGraphLaunch(exec, stream));
  std::vector<uint64_t> records(size_t{2} * kTimelineMaxCtas * kTimelineEvents);
  CHECK(cudaStreamSynchronize(stream));
  CHECK(GatherMlpTimeline(records.data(), true));
  CHECK(cudaGraphLaunch(exec, stream));
  CHECK(cudaStreamSynchronize(stream));
  CHECK(GatherMlpTimeline(records.data(), true));
  // The same pair alone (single launches after an idle GPU), for the ramp without overlap.
  pair(0);
  CHECK(cudaStreamSynchronize(stream));
  std::vector<uint64_t> alone(records.size());
  CHECK(GatherMlpTimeline(alone.data(), true));

  for (int mode = 0; mode < 2; ++mode) {
    const std::vector<uint64_t>& r = mode == 0 ? records : alone;
    uint64_t zero = UINT64_MAX;
    for (int c = 0; c < kTimelineMaxCtas; ++c) {
      if (r[c * kTimelineEvents] != 0) zero = std::min(zero, r[c * kTimelineEvents]);
    }
    std::printf("\n== batch %d, density %.3f (%d neurons), warp layout %d, %s\n", rows, double(k) / kFfn, k,
                o.warp_layout, mode == 0 ? "last pair of a graph of 16" : "one pair alone");
    PrintKernel("fc1", r.data(), zero);
    PrintKernel("fc2", r.data() + size_t{kTimelineMaxCtas} * kTimelineEvents, zero);
  }
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  CHECK(cudaStreamDestroy(stream));
  for (void* v : {x, static_cast<void*>(indices), h, y, ws}) CHECK(cudaFree(v));
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--batches") {
      o.batches = ParseInts(FlagValue(argc, argv, &i));
    } else if (arg == "--densities") {
      o.densities = ParseDoubles(FlagValue(argc, argv, &i));
    } else if (arg == "--warp-layout") {
      o.warp_layout = std::atoi(FlagValue(argc, argv, &i).c_str());
    } else {
      UnknownArgument(arg);
    }
  }
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs; OPT-6.7B MLP (4096 -> 16384 -> 4096), fp16\n", prop.name,
              prop.multiProcessorCount);
  std::vector<MlpWeights> weights = MakeMlpWeightCopies(kHidden, kFfn, false, prop.l2CacheSize);
  for (int rows : o.batches) {
    for (double d : o.densities) Run(o, rows, d, weights);
  }
  FreeMlpWeights(weights);
  return 0;
}

}  // namespace
}  // namespace polar::bench

int main(int argc, char** argv) { return polar::bench::Main(argc, argv); }
