// CPU attention at a decode step, dense and sparse (Polar Sparsity's head
// selection), over a paged KV cache: kernels::cpu::PagedAttention on random
// data. For each head layout and density it prints the median time of a
// step, the KV bytes the selected groups hold and the time relative to dense.
//
//   polar_cpu_attention_bench [--batch B] [--context L] [--reps N]
// Prints one JSON object per line (machine-readable) after a header line.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/paged_attention.h"

namespace {

struct Layout {
  const char* name;
  int64_t q_heads, kv_heads, head_dim;
};

double MedianMs(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int64_t GroupsToKeep(double density, int64_t groups) {  // as engine/model/head_routers.h
  return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(density * groups - 0.02)), 1, groups);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 8, context = 4096, reps = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t value = std::atoll(argv[i + 1]);
    if (flag == "--batch") batch = value;
    else if (flag == "--context") context = value;
    else if (flag == "--reps") reps = value;
    else {
      std::fprintf(stderr, "usage: polar_cpu_attention_bench [--batch B] [--context L] [--reps N]\n");
      return 2;
    }
  }
  const Layout layouts[] = {{"SmolLM2-135M (9 q / 3 kv x 64)", 9, 3, 64},
                            {"LLaMA-2-7B (32 x 128)", 32, 32, 128},
                            {"LLaMA-3-8B (32 q / 8 kv x 128)", 32, 8, 128}};
  const double densities[] = {1.0, 0.75, 0.5, 0.25, 0.125};
  const int64_t block = 16;
  std::printf("# batch %lld, context %lld, %d threads, median of %lld steps\n", static_cast<long long>(batch),
              static_cast<long long>(context), omp_get_max_threads(), static_cast<long long>(reps));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (const Layout& layout : layouts) {
    const int64_t blocks_per_seq = (context + block - 1) / block;
    const int64_t total_blocks = batch * blocks_per_seq;
    const int64_t row = layout.kv_heads * layout.head_dim;
    std::vector<float> k(total_blocks * block * row), v(k.size());
    std::vector<float> q(batch * layout.q_heads * layout.head_dim), out(q.size());
    for (float& x : k) x = uni(rng);
    for (float& x : v) x = uni(rng);
    for (float& x : q) x = uni(rng);
    std::vector<int32_t> block_ids(total_blocks);
    std::iota(block_ids.begin(), block_ids.end(), 0);
    std::shuffle(block_ids.begin(), block_ids.end(), rng);
    std::vector<int32_t> q_indptr(batch + 1), block_indptr(batch + 1), context_lens(batch, static_cast<int32_t>(context));
    for (int64_t s = 0; s <= batch; ++s) {
      q_indptr[s] = static_cast<int32_t>(s);
      block_indptr[s] = static_cast<int32_t>(s * blocks_per_seq);
    }
    double dense_ms = 0;
    int64_t last_keep = -1;
    for (double density : densities) {
      const int64_t keep = GroupsToKeep(density, layout.kv_heads);
      if (keep == last_keep) continue;  // rounds to a group count already measured
      last_keep = keep;
      std::vector<int32_t> group_indptr(batch + 1, 0), group_indices;
      for (int64_t s = 0; s < batch; ++s) {
        std::vector<int32_t> all(layout.kv_heads);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        std::sort(all.begin(), all.begin() + keep);
        group_indices.insert(group_indices.end(), all.begin(), all.begin() + keep);
        group_indptr[s + 1] = static_cast<int32_t>(group_indices.size());
      }
      polar::kernels::cpu::PagedAttentionParams p;
      p.q = q.data();
      p.k_cache = k.data();
      p.v_cache = v.data();
      p.out = out.data();
      p.num_seqs = batch;
      p.num_q_heads = layout.q_heads;
      p.num_kv_heads = layout.kv_heads;
      p.head_dim = layout.head_dim;
      p.block_size = block;
      p.q_indptr = q_indptr.data();
      p.context_lens = context_lens.data();
      p.block_indptr = block_indptr.data();
      p.block_ids = block_ids.data();
      p.scale = 1.0f / std::sqrt(static_cast<float>(layout.head_dim));
      if (density < 1.0) {
        p.group_indptr = group_indptr.data();
        p.group_indices = group_indices.data();
      }
      polar::kernels::cpu::PagedAttention(p);  // warm-up
      std::vector<double> times;
      for (int64_t r = 0; r < reps; ++r) {
        const auto start = std::chrono::steady_clock::now();
        polar::kernels::cpu::PagedAttention(p);
        times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
      }
      const double ms = MedianMs(times);
      if (density == 1.0) dense_ms = ms;
      const double achieved = static_cast<double>(keep) / static_cast<double>(layout.kv_heads);
      const double kv_bytes = 2.0 * batch * context * keep * layout.head_dim * sizeof(float);
      std::printf(
          "{\"layout\": \"%s\", \"batch\": %lld, \"context\": %lld, \"density\": %.3f, \"groups_kept\": %lld, "
          "\"ms\": %.3f, \"kv_gb\": %.4f, \"gb_per_s\": %.2f, \"vs_dense\": %.3f}\n",
          layout.name, static_cast<long long>(batch), static_cast<long long>(context), achieved,
          static_cast<long long>(keep), ms, kv_bytes / 1e9, kv_bytes / 1e6 / ms, ms / dense_ms);
      std::fflush(stdout);
    }
  }
  return 0;
}
