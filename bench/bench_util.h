// What the kernel microbenchmarks in bench/ share: CUDA error checks that
// exit, random 16-bit device data, the copy-bandwidth yardstick, the timing
// method of every table in docs/performance-kernels.md (median of single
// CUDA-event-timed launches after warm-up, and time per launch inside a CUDA
// graph of kGraphLaunches launches), and comma-list flag parsing. One
// definition, so that numbers from different benchmarks are measured alike.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace polar::bench {

// A benchmark has no use for a run after a failed call: print it and exit(1).
void Check(cudaError_t e, const char* what);
#define CHECK(expr) ::polar::bench::Check((expr), #expr)

// Fills p with random 16-bit floats (fp16, or bf16 by truncation) in
// (-scale, scale) from a counter hash: fast to fill tens of GB, never zeros.
void FillRandom16(void* p, size_t elems, uint64_t seed, bool bf16, float scale);
// The same in a fresh allocation (of at least 128 elements).
void* Random16(size_t elems, uint64_t seed, bool bf16, float scale);

template <typename T>
T* Upload(const std::vector<T>& v) {
  T* d = nullptr;
  CHECK(cudaMalloc(&d, std::max<size_t>(1, v.size()) * sizeof(T)));
  if (!v.empty()) CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// How many of the elems 16-bit floats at device are NaN or infinite: the
// benchmarks' sanity check on an output (correctness is the tests' job).
size_t CountNonFinite16(const void* device, size_t elems, bool bf16);

double Median(std::vector<float> v);

// Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes
// written: the median of `iters` 2 GiB copies after `warmup` of them.
double CopyBandwidth(int warmup, int iters);

// Launches per CUDA graph replay in Time.
inline constexpr int kGraphLaunches = 16;

// How many launches Time makes: single launches (warm-up, then timed), and
// replays of the captured graph (warm-up, then timed).
struct TimingRuns {
  int warmup, iters;
  int graph_warmup, graph_iters;
};

// Median single-launch time and graph time per launch, in microseconds.
struct Timing {
  double launch_us, graph_us;
};

// Times launch(i, stream) for i = 0, 1, ... (each call picks its own
// rotation of inputs) on a stream of its own: each single launch between two
// CUDA events (host launch cost included), then launches 0..kGraphLaunches-1
// captured in a graph and replayed, as the engine runs a decode step.
Timing Time(const TimingRuns& runs, const std::function<void(int, cudaStream_t)>& launch);

// "a,b,c" -> {"a", "b", "c"}
std::vector<std::string> SplitCommas(const std::string& text);
std::vector<int> ParseInts(const std::string& comma_list);
std::vector<double> ParseDoubles(const std::string& comma_list);

// The value after the flag at argv[*i] (advancing *i to it), or a message
// and exit(2) where the flag is last.
std::string FlagValue(int argc, char** argv, int* i);
// Prints "unknown argument ARG" and exits with status 2.
[[noreturn]] void UnknownArgument(const std::string& arg);

}  // namespace polar::bench
