// What the gather-GEMM benchmarks (gather_mlp_bench, gather_mlp_timeline)
// feed the kernels, defined once so that their numbers describe the same
// work: the OPT-style MLP weights in copies rotated to defeat L2, the
// neuron count a density stands for, and random neuron selections.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "bench/bench_util.h"

namespace polar::bench {

// One copy of an MLP's weights (device memory).
struct MlpWeights {
  void *w1, *b1, *w2t, *b2;  // [ffn, hidden], [ffn], [ffn, hidden], [hidden]
};

// Enough weight copies for >= 1 GiB and >= 20x the L2 cache in all, so that
// launches rotating over them read from DRAM; random values of the size a
// trained layer has (w ~ 1/sqrt(hidden), biases ~ 0.5).
inline std::vector<MlpWeights> MakeMlpWeightCopies(int hidden, int ffn, bool bf16, int l2_bytes) {
  const double set_bytes = 2.0 * ffn * hidden * 2;
  const int sets = static_cast<int>(std::ceil(std::max<double>(1 << 30, 20.0 * l2_bytes) / set_bytes));
  std::vector<MlpWeights> weights(sets);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hidden));
  for (int i = 0; i < sets; ++i) {
    weights[i].w1 = Random16(size_t(ffn) * hidden, 10 * i + 1, bf16, scale);
    weights[i].b1 = Random16(ffn, 10 * i + 2, bf16, 0.5f);
    weights[i].w2t = Random16(size_t(ffn) * hidden, 10 * i + 3, bf16, scale);
    weights[i].b2 = Random16(hidden, 10 * i + 4, bf16, 0.5f);
  }
  return weights;
}

inline void FreeMlpWeights(std::vector<MlpWeights>& weights) {
  for (MlpWeights& w : weights) {
    CHECK(cudaFree(w.w1));
    CHECK(cudaFree(w.b1));
    CHECK(cudaFree(w.w2t));
    CHECK(cudaFree(w.b2));
  }
  weights.clear();
}

// Neurons kept at a density below 1: density x ffn rounded to a multiple of
// 128 (the paper's router configurations), at least 128.
inline int SelectedNeurons(double density, int ffn) {
  return std::max(128, static_cast<int>(std::lround(density * ffn / 128.0)) * 128);
}

// k distinct neuron ids out of ffn, ascending (as SelectMlpNeurons writes them).
inline std::vector<int32_t> RandomNeurons(int ffn, int k, std::mt19937& rng) {
  std::vector<int32_t> all(ffn);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(k);
  std::sort(all.begin(), all.end());
  return all;
}

}  // namespace polar::bench
