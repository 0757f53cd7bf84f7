// Shared pieces of the kernel microbenchmarks (bench_util.h).
#include "bench/bench_util.h"

#include <cuda_fp16.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace polar::bench {
namespace {

__global__ void FillRandomKernel(uint16_t* out, size_t n, uint64_t seed, bool bf16, float scale) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    const float u = ((static_cast<float>(x >> 40) + 0.5f) * (2.0f / 16777216.0f) - 1.0f) * scale;
    uint16_t bits;
    if (bf16) {
      uint32_t f;
      std::memcpy(&f, &u, 4);
      bits = static_cast<uint16_t>(f >> 16);
    } else {
      const __half h = __float2half_rn(u);
      std::memcpy(&bits, &h, 2);
    }
    out[i] = bits;
  }
}

}  // namespace

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

void FillRandom16(void* p, size_t elems, uint64_t seed, bool bf16, float scale) {
  FillRandomKernel<<<1024, 256>>>(static_cast<uint16_t*>(p), elems, seed, bf16, scale);
  CHECK(cudaGetLastError());
}

void* Random16(size_t elems, uint64_t seed, bool bf16, float scale) {
  void* p = nullptr;
  CHECK(cudaMalloc(&p, std::max<size_t>(elems, 128) * 2));
  FillRandom16(p, elems, seed, bf16, scale);
  return p;
}

size_t CountNonFinite16(const void* device, size_t elems, bool bf16) {
  std::vector<uint16_t> host(elems);
  CHECK(cudaMemcpy(host.data(), device, elems * 2, cudaMemcpyDeviceToHost));
  return std::count_if(host.begin(), host.end(), [&](uint16_t b) {
    return bf16 ? (b & 0x7f80) == 0x7f80 : (b & 0x7c00) == 0x7c00;  // exponent all ones
  });
}

double Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double CopyBandwidth(int warmup, int iters) {
  const size_t bytes = size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  CHECK(cudaMalloc(&a, bytes));
  CHECK(cudaMalloc(&b, bytes));
  CHECK(cudaMemset(a, 1, bytes));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < warmup + iters; ++i) {
    CHECK(cudaEventRecord(start));
    CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CHECK(cudaEventElapsedTime(&t, start, stop));
    if (i >= warmup) ms.push_back(t);
  }
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  CHECK(cudaFree(a));
  CHECK(cudaFree(b));
  return 2.0 * bytes / (Median(ms) * 1e-3);
}

Timing Time(const TimingRuns& runs, const std::function<void(int, cudaStream_t)>& launch) {
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  // Median of `timed` event-timed runs of body(i) after `warmup`, each divided
  // by `per_run` (the launches one run makes).
  auto median_ms = [&](int warmup, int timed, int per_run, auto&& body) {
    std::vector<float> ms;
    for (int i = 0; i < warmup + timed; ++i) {
      CHECK(cudaEventRecord(start, stream));
      body(i);
      CHECK(cudaEventRecord(stop, stream));
      CHECK(cudaEventSynchronize(stop));
      float t = 0;
      CHECK(cudaEventElapsedTime(&t, start, stop));
      if (i >= warmup) ms.push_back(t / per_run);
    }
    return Median(ms);
  };
  const double launch_ms = median_ms(runs.warmup, runs.iters, 1, [&](int i) { launch(i, stream); });
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kGraphLaunches; ++i) launch(i, stream);
  CHECK(cudaStreamEndCapture(stream, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const double graph_ms = median_ms(runs.graph_warmup, runs.graph_iters, kGraphLaunches,
                                    [&](int) { CHECK(cudaGraphLaunch(exec, stream)); });
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  CHECK(cudaStreamDestroy(stream));
  return {launch_ms * 1e3, graph_ms * 1e3};
}

std::vector<std::string> SplitCommas(const std::string& text) {
  std::vector<std::string> parts;
  for (size_t pos = 0; pos <= text.size();) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    parts.push_back(text.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return parts;
}

std::vector<int> ParseInts(const std::string& comma_list) {
  std::vector<int> values;
  for (const std::string& part : SplitCommas(comma_list)) values.push_back(std::atoi(part.c_str()));
  return values;
}

std::vector<double> ParseDoubles(const std::string& comma_list) {
  std::vector<double> values;
  for (const std::string& part : SplitCommas(comma_list)) values.push_back(std::atof(part.c_str()));
  return values;
}

std::string FlagValue(int argc, char** argv, int* i) {
  if (*i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", argv[*i]);
    std::exit(2);
  }
  return argv[++*i];
}

void UnknownArgument(const std::string& arg) {
  std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
  std::exit(2);
}

}  // namespace polar::bench
