// Head selection kernels (kernels/cpu/head_select.h) against direct
// definitions, and the property the whole sparse path rests on: attention
// that computes only the selected KV groups equals dense attention with the
// other heads' outputs masked to zero, bit for bit.
#include "kernels/cpu/head_select.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/paged_attention.h"

namespace polar::kernels::cpu {
namespace {

std::vector<float> Random(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// The selected groups of one sequence by the definition: sort groups by
// (score desc, id asc), keep the first `keep`, ascending.
std::vector<int32_t> Expected(const float* row, int64_t heads, int64_t groups, GroupScoreReduce reduce, int keep) {
  const int64_t r = heads / groups;
  std::vector<std::pair<float, int32_t>> scored;
  for (int32_t g = 0; g < groups; ++g) {
    float v = reduce == GroupScoreReduce::kMax ? -INFINITY : 0.0f;
    for (int64_t i = 0; i < r; ++i) {
      const float s = std::isnan(row[g * r + i]) ? -INFINITY : row[g * r + i];
      v = reduce == GroupScoreReduce::kMax ? std::max(v, s) : v + s;
    }
    if (reduce == GroupScoreReduce::kMean) v /= static_cast<float>(r);
    scored.push_back({v, g});
  }
  std::sort(scored.begin(), scored.end(),
            [](auto a, auto b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  std::vector<int32_t> out;
  for (int i = 0; i < std::min<int64_t>(keep, groups); ++i) out.push_back(scored[i].second);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(SelectHeadGroups, MatchesTheDefinitionOverShapesAndKeeps) {
  std::mt19937 rng(7);
  for (auto [heads, groups] : {std::pair<int64_t, int64_t>{9, 3}, {32, 8}, {72, 72}, {12, 4}, {8, 1}}) {
    for (GroupScoreReduce reduce : {GroupScoreReduce::kMax, GroupScoreReduce::kMean}) {
      const int64_t seqs = 7, rows = 19;
      std::vector<float> scores = Random(rows * heads, rng, -3, 3);
      scores[5] = std::numeric_limits<float>::quiet_NaN();  // ranks last
      // Ties: two groups with identical scores in row 2.
      if (groups > 2) std::copy_n(&scores[2 * heads], heads / groups, &scores[2 * heads + heads / groups]);
      std::vector<int32_t> score_rows = {0, 2, 3, 8, 10, 11, 18};
      std::vector<int32_t> keep;
      std::uniform_int_distribution<int32_t> k(0, static_cast<int32_t>(groups) + 2);
      for (int64_t s = 0; s < seqs; ++s) keep.push_back(k(rng));
      keep[0] = 0;
      keep[1] = 1;
      std::vector<int32_t> indptr(seqs + 1, -7), indices(seqs * groups, -7);
      HeadSelectParams p;
      p.scores = scores.data();
      p.score_rows = score_rows.data();
      p.keep = keep.data();
      p.num_seqs = seqs;
      p.num_heads = heads;
      p.num_groups = groups;
      p.reduce = reduce;
      p.indptr = indptr.data();
      p.indices = indices.data();
      SelectHeadGroups(p);
      ASSERT_EQ(indptr[0], 0);
      for (int64_t s = 0; s < seqs; ++s) {
        const std::vector<int32_t> got(indices.begin() + indptr[s], indices.begin() + indptr[s + 1]);
        EXPECT_EQ(got, Expected(&scores[score_rows[s] * heads], heads, groups, reduce, keep[s]))
            << heads << "/" << groups << " seq " << s << " keep " << keep[s];
      }
    }
  }
}

TEST(HeadNorms, AreTheL2NormOfEachHeadSlice) {
  std::mt19937 rng(3);
  const int64_t rows = 5, heads = 6, dim = 16;
  std::vector<float> x = Random(rows * heads * dim, rng);
  std::vector<float> norms(rows * heads, -1.0f);
  HeadNorms(x.data(), rows, heads, dim, norms.data());
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      double sum = 0;
      for (int64_t i = 0; i < dim; ++i) sum += x[(t * heads + h) * dim + i] * x[(t * heads + h) * dim + i];
      EXPECT_NEAR(norms[t * heads + h], std::sqrt(sum), 1e-5);
    }
  }
}

// A paged cache with random K/V and random block tables.
struct PagedCase {
  int64_t heads, groups, dim = 32, block = 16;
  std::vector<int32_t> q_len, ctx;  // per sequence
  std::vector<float> q, k, v;
  std::vector<int32_t> q_indptr, block_indptr, block_ids;
  void Build(std::mt19937& rng) {
    const int64_t seqs = static_cast<int64_t>(ctx.size());
    q_indptr = {0};
    block_indptr = {0};
    int64_t total_blocks = 0;
    for (int64_t s = 0; s < seqs; ++s) {
      q_indptr.push_back(q_indptr.back() + q_len[s]);
      const int64_t nb = (ctx[s] + block - 1) / block;
      total_blocks += nb;
      block_indptr.push_back(static_cast<int32_t>(total_blocks));
    }
    std::vector<int32_t> ids(total_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    block_ids = ids;
    q = Random(q_indptr.back() * heads * dim, rng);
    k = Random(total_blocks * block * groups * dim, rng);
    v = Random(total_blocks * block * groups * dim, rng);
  }
  PagedAttentionParams Params(float* out) const {
    PagedAttentionParams p;
    p.q = q.data();
    p.k_cache = k.data();
    p.v_cache = v.data();
    p.out = out;
    p.num_seqs = static_cast<int64_t>(ctx.size());
    p.num_q_heads = heads;
    p.num_kv_heads = groups;
    p.head_dim = dim;
    p.block_size = block;
    p.q_indptr = q_indptr.data();
    p.context_lens = ctx.data();
    p.block_indptr = block_indptr.data();
    p.block_ids = block_ids.data();
    p.scale = 1.0f / std::sqrt(static_cast<float>(dim));
    return p;
  }
};

TEST(SparseAttention, EqualsDenseWithTheOtherHeadsMaskedBitForBit) {
  std::mt19937 rng(11);
  for (auto [heads, groups] : {std::pair<int64_t, int64_t>{4, 4}, {8, 2}, {12, 3}, {8, 1}}) {
    PagedCase c;
    c.heads = heads;
    c.groups = groups;
    c.q_len = {1, 1, 3, 1, 1};
    c.ctx = {1, 37, 40, 16, 300};
    c.Build(rng);
    const int64_t rows = c.q_indptr.back();
    // Selections: none, one, all, and random subsets.
    std::vector<int32_t> indptr = {0}, indices;
    for (size_t s = 0; s < c.ctx.size(); ++s) {
      std::vector<int32_t> all(groups);
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      const int64_t keep = s == 0 ? 0 : s == 1 ? 1 : s == 2 ? groups : 1 + rng() % groups;
      std::vector<int32_t> chosen(all.begin(), all.begin() + keep);
      std::sort(chosen.begin(), chosen.end());
      indices.insert(indices.end(), chosen.begin(), chosen.end());
      indptr.push_back(static_cast<int32_t>(indices.size()));
    }
    std::vector<float> sparse(rows * heads * c.dim, std::numeric_limits<float>::quiet_NaN());
    PagedAttentionParams p = c.Params(sparse.data());
    p.group_indptr = indptr.data();
    p.group_indices = indices.data();
    PagedAttention(p);
    std::vector<float> dense(rows * heads * c.dim, std::numeric_limits<float>::quiet_NaN());
    PagedAttention(c.Params(dense.data()));
    MaskHeadGroups(dense.data(), static_cast<int64_t>(c.ctx.size()), c.q_indptr.data(), heads, groups, c.dim,
                   indptr.data(), indices.data());
    ASSERT_EQ(std::memcmp(sparse.data(), dense.data(), sparse.size() * sizeof(float)), 0)
        << heads << "/" << groups;
    // And a selection really removed something: the masked rows are zero.
    EXPECT_EQ(sparse[0], 0.0f);  // sequence 0 selected nothing
  }
}

}  // namespace
}  // namespace polar::kernels::cpu
