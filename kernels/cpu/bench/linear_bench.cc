// polar_linear_bench: throughput of kernels::cpu::Linear (the batch-invariant
// kernel) next to OpenBLAS's cblas_sgemm, which Linear used to call, over
// SmolLM2-135M's linear shapes and a range of row counts (decode batches up to
// prefill chunks). Threads come from OMP_NUM_THREADS.
//
// Each case cycles through enough copies of the weight to overflow the L3
// cache (64 MiB in all), as the serving loop does: a decode step streams the
// whole model, so no layer finds its weight cached. GB/s counts the bytes of
// w, x and out once per call; GFLOP/s counts 2 * rows * in * out.
//
// Usage: polar_linear_bench [--seconds S] [IN OUT ROWS]   (default: the full grid)
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Case {
  int64_t in, out, rows;
};

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = normal(rng);
  return v;
}

// The old Linear without bias: out = x · wᵀ through OpenBLAS.
void BlasLinear(const float* x, const float* w, int64_t rows, int64_t in, int64_t out_features, float* out) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(out_features),
              static_cast<int>(in), 1.0f, x, static_cast<int>(in), w, static_cast<int>(in), 0.0f, out,
              static_cast<int>(out_features));
}

// Seconds per call: the best of ten rounds of at least seconds / 10 each
// (short rounds, so that on a shared machine some of them run undisturbed).
double SecondsPerCall(const std::function<void(int)>& call, double seconds) {
  constexpr int kRounds = 10;
  call(0);  // warm up (page faults, thread team)
  double best = 1e30;
  for (int round = 0; round < kRounds; ++round) {
    int calls = 0;
    const Clock::time_point start = Clock::now();
    double elapsed = 0;
    do {
      call(calls++);
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < seconds / kRounds || calls < 2);
    best = std::min(best, elapsed / calls);
  }
  return best;
}

void Run(const Case& c, double seconds) {
  const size_t w_size = static_cast<size_t>(c.out * c.in);
  const size_t copies = std::max<size_t>(1, (size_t{64} << 20) / (w_size * sizeof(float)));
  std::vector<std::vector<float>> weights;
  for (size_t i = 0; i < copies; ++i) weights.push_back(Random(w_size, 100 + static_cast<uint32_t>(i)));
  const std::vector<float> x = Random(static_cast<size_t>(c.rows * c.in), 7);
  std::vector<float> old_out(static_cast<size_t>(c.rows * c.out)), new_out(old_out.size());

  const double old_s = SecondsPerCall(
      [&](int i) { BlasLinear(x.data(), weights[i % copies].data(), c.rows, c.in, c.out, old_out.data()); }, seconds);
  const double new_s = SecondsPerCall(
      [&](int i) {
        polar::kernels::cpu::Linear(x.data(), weights[i % copies].data(), nullptr, c.rows, c.in, c.out,
                                    new_out.data());
      },
      seconds);

  // Both on the same weight, to show they agree to fp32 rounding.
  BlasLinear(x.data(), weights[0].data(), c.rows, c.in, c.out, old_out.data());
  polar::kernels::cpu::Linear(x.data(), weights[0].data(), nullptr, c.rows, c.in, c.out, new_out.data());
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < old_out.size(); ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::fabs(old_out[i] - new_out[i])));
    max_abs = std::max(max_abs, static_cast<double>(std::fabs(old_out[i])));
  }

  const double flops = 2.0 * c.rows * c.in * c.out;
  const double bytes = sizeof(float) * (static_cast<double>(w_size) + c.rows * c.in + c.rows * c.out);
  std::printf("%5lld %6lld %4lld | %9.3f %7.1f %6.1f | %9.3f %7.1f %6.1f | %5.2fx | %.1e\n",
              static_cast<long long>(c.in), static_cast<long long>(c.out), static_cast<long long>(c.rows),
              old_s * 1e3, flops / old_s * 1e-9, bytes / old_s * 1e-9, new_s * 1e3, flops / new_s * 1e-9,
              bytes / new_s * 1e-9, old_s / new_s, max_diff / max_abs);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 0.3;
  std::vector<Case> cases;
  int arg = 1;
  if (arg + 1 < argc && std::strcmp(argv[arg], "--seconds") == 0) {
    seconds = std::atof(argv[arg + 1]);
    arg += 2;
  }
  if (arg + 2 < argc) {
    cases.push_back({std::atoll(argv[arg]), std::atoll(argv[arg + 1]), std::atoll(argv[arg + 2])});
  } else {
    // SmolLM2-135M: q/o (576), k/v (192), MLP up (1536), fused gate+up (3072), LM head (49152), down.
    const Case shapes[] = {{576, 576, 0}, {576, 192, 0}, {576, 1536, 0}, {576, 3072, 0}, {576, 49152, 0}, {1536, 576, 0}};
    for (const Case& s : shapes) {
      for (int64_t rows : {1, 4, 16, 64, 256, 512}) cases.push_back({s.in, s.out, rows});
    }
  }
  std::printf("threads %d (OpenBLAS %s)\n", omp_get_max_threads(), openblas_get_corename());
  std::printf("   in    out rows |  blas ms  GFLOP/s   GB/s |   new ms  GFLOP/s   GB/s | speed | rel diff\n");
  for (const Case& c : cases) Run(c, seconds);
  return 0;
}
