// Paged attention (kernels/cpu) against a direct dense computation in double
// precision over contiguous per-sequence K/V: shuffled block tables, mixed
// prefill/decode queries and lengths in one batch, GQA ratios, block sizes,
// sliding windows, and head selection (unselected groups must be zero,
// selected ones equal to dense).
#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace polar::kernels::cpu {
namespace {

struct Case {
  int num_q_heads, num_kv_heads, head_dim, block_size;
  std::vector<int> context_lens, q_lens;
  int sliding_window = 0;
  bool select = false;
};

void RunCase(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int S = static_cast<int>(c.context_lens.size());
  const int D = c.head_dim, Hq = c.num_q_heads, Hkv = c.num_kv_heads, G = Hq / Hkv;
  const int row = Hkv * D;
  // Contiguous K/V per sequence: [context, Hkv, D].
  std::vector<std::vector<float>> k(S), v(S);
  int total_blocks = 0;
  for (int s = 0; s < S; ++s) {
    k[s].resize(c.context_lens[s] * row);
    v[s].resize(c.context_lens[s] * row);
    for (float& x : k[s]) x = normal(rng);
    for (float& x : v[s]) x = normal(rng);
    total_blocks += (c.context_lens[s] + c.block_size - 1) / c.block_size;
  }
  // Paged copy with blocks handed out in a shuffled order (plus spare blocks).
  const int num_blocks = total_blocks + 3;
  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<float> k_cache(static_cast<size_t>(num_blocks) * c.block_size * row, NAN);
  std::vector<float> v_cache(k_cache.size(), NAN);
  std::vector<int32_t> block_indptr{0}, block_ids, q_indptr{0}, context_lens;
  int next = 0;
  for (int s = 0; s < S; ++s) {
    const int nb = (c.context_lens[s] + c.block_size - 1) / c.block_size;
    for (int b = 0; b < nb; ++b) block_ids.push_back(pool[next++]);
    block_indptr.push_back(static_cast<int32_t>(block_ids.size()));
    for (int t = 0; t < c.context_lens[s]; ++t) {
      const int64_t slot = static_cast<int64_t>(block_ids[block_indptr[s] + t / c.block_size]) * c.block_size +
                           t % c.block_size;
      std::copy_n(&k[s][t * row], row, &k_cache[slot * row]);
      std::copy_n(&v[s][t * row], row, &v_cache[slot * row]);
    }
    q_indptr.push_back(q_indptr.back() + c.q_lens[s]);
    context_lens.push_back(c.context_lens[s]);
  }
  const int T = q_indptr.back();
  std::vector<float> q(static_cast<size_t>(T) * Hq * D);
  for (float& x : q) x = normal(rng);
  // Selection: sequence s keeps groups {g : (g + s) % 2 == 0}, the last sequence none.
  std::vector<int32_t> group_indptr{0}, group_indices;
  for (int s = 0; s < S; ++s) {
    for (int g = 0; g < Hkv && s + 1 < S; ++g) {
      if ((g + s) % 2 == 0) group_indices.push_back(g);
    }
    group_indptr.push_back(static_cast<int32_t>(group_indices.size()));
  }
  std::vector<float> out(q.size(), 12345.0f);  // poisoned
  PagedAttentionParams p;
  p.q = q.data();
  p.k_cache = k_cache.data();
  p.v_cache = v_cache.data();
  p.out = out.data();
  p.num_seqs = S;
  p.num_q_heads = Hq;
  p.num_kv_heads = Hkv;
  p.head_dim = D;
  p.block_size = c.block_size;
  p.q_indptr = q_indptr.data();
  p.context_lens = context_lens.data();
  p.block_indptr = block_indptr.data();
  p.block_ids = block_ids.data();
  p.scale = 1.0f / std::sqrt(static_cast<float>(D));
  p.sliding_window = c.sliding_window;
  if (c.select) {
    p.group_indptr = group_indptr.data();
    p.group_indices = group_indices.data();
  }
  PagedAttention(p);

  double max_err = 0.0;
  for (int s = 0; s < S; ++s) {
    for (int i = 0; i < c.q_lens[s]; ++i) {
      const int token = q_indptr[s] + i;
      const int pos = c.context_lens[s] - c.q_lens[s] + i;
      const int begin = c.sliding_window > 0 ? std::max(0, pos + 1 - c.sliding_window) : 0;
      for (int h = 0; h < Hq; ++h) {
        const int g = h / G;
        const float* got = &out[(static_cast<size_t>(token) * Hq + h) * D];
        const bool selected =
            !c.select || std::find(group_indices.begin() + group_indptr[s],
                                   group_indices.begin() + group_indptr[s + 1], g) !=
                             group_indices.begin() + group_indptr[s + 1];
        if (!selected) {
          for (int d = 0; d < D; ++d) ASSERT_EQ(got[d], 0.0f) << "unselected head must be zero";
          continue;
        }
        std::vector<double> w(pos + 1 - begin);
        double mx = -1e300;
        for (int j = begin; j <= pos; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double(q[(static_cast<size_t>(token) * Hq + h) * D + d]) * k[s][j * row + g * D + d];
          w[j - begin] = dot / std::sqrt(double(D));
          mx = std::max(mx, w[j - begin]);
        }
        double z = 0;
        for (double& x : w) z += (x = std::exp(x - mx));
        for (int d = 0; d < D; ++d) {
          double ref = 0;
          for (int j = begin; j <= pos; ++j) ref += w[j - begin] / z * v[s][j * row + g * D + d];
          max_err = std::max(max_err, std::abs(ref - got[d]));
        }
      }
    }
  }
  EXPECT_LT(max_err, 2e-5) << "max abs error";
}

TEST(PagedAttentionTest, MixedBatchAcrossShapes) {
  uint32_t seed = 1;
  for (int hd : {16, 64, 128}) {
    for (auto [hq, hkv] : {std::pair{4, 4}, {8, 2}, {8, 1}}) {
      for (int bs : {1, 16, 32}) {
        Case c{hq, hkv, hd, bs, {1, 17, 40, 100}, {1, 5, 40, 1}};
        RunCase(c, seed++);
      }
    }
  }
}

TEST(PagedAttentionTest, SlidingWindow) {
  Case c{8, 2, 32, 16, {50, 64, 7}, {50, 1, 3}, /*sliding_window=*/10};
  RunCase(c, 99);
}

TEST(PagedAttentionTest, HeadSelectionMatchesDenseWithZeros) {
  for (auto [hq, hkv] : {std::pair{8, 8}, {8, 4}, {8, 2}}) {
    Case c{hq, hkv, 64, 16, {33, 70, 5}, {1, 70, 1}};
    c.select = true;
    RunCase(c, 7 + hkv);
  }
}

TEST(PagedAttentionTest, AppendKvWritesSlots) {
  const int row = 6;
  std::vector<float> k(3 * row), v(3 * row);
  for (int i = 0; i < 3 * row; ++i) {
    k[i] = 1.5f + i;
    v[i] = -0.5f - i;
  }
  std::vector<float> kc(10 * row, 0.0f), vc(10 * row, 0.0f);
  const int64_t slots[3] = {9, 0, 4};
  AppendKv(k.data(), v.data(), slots, 3, row, kc.data(), vc.data());
  for (int t = 0; t < 3; ++t) {
    for (int i = 0; i < row; ++i) {
      EXPECT_EQ(kc[slots[t] * row + i], k[t * row + i]);
      EXPECT_EQ(vc[slots[t] * row + i], v[t * row + i]);
    }
  }
}

}  // namespace
}  // namespace polar::kernels::cpu
