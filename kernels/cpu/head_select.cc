// See head_select.h.
#include "kernels/cpu/head_select.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace polar::kernels::cpu {

void GroupScores(const float* row, int64_t num_heads, int64_t num_groups, GroupScoreReduce reduce, float* out) {
  const int64_t r = num_heads / num_groups;
  for (int64_t g = 0; g < num_groups; ++g) {
    const float* heads = row + g * r;
    float value = reduce == GroupScoreReduce::kMax ? -std::numeric_limits<float>::infinity() : 0.0f;
    for (int64_t i = 0; i < r; ++i) {
      // NaN ranks last: it becomes -inf (and poisons a mean to -inf too).
      const float s = std::isnan(heads[i]) ? -std::numeric_limits<float>::infinity() : heads[i];
      value = reduce == GroupScoreReduce::kMax ? std::max(value, s) : value + s;
    }
    out[g] = reduce == GroupScoreReduce::kMax ? value : value / static_cast<float>(r);
  }
}

void SelectHeadGroups(const HeadSelectParams& p) {
  // Per-thread scratch, grown once: no allocation in the decode step.
  thread_local std::vector<float> score;
  thread_local std::vector<int32_t> order;
  score.resize(p.num_groups);
  order.resize(p.num_groups);
  p.indptr[0] = 0;
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const int64_t keep = std::clamp<int64_t>(p.keep[s], 0, p.num_groups);
    int32_t* out = p.indices + p.indptr[s];
    if (keep == p.num_groups) {
      std::iota(out, out + keep, 0);
    } else if (keep > 0) {
      GroupScores(p.scores + static_cast<int64_t>(p.score_rows[s]) * p.num_heads, p.num_heads, p.num_groups, p.reduce,
                  score.data());
      std::iota(order.begin(), order.end(), 0);
      // Best first; equal scores: lower group id first (a total order, so
      // the choice is deterministic).
      std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](int32_t a, int32_t b) {
        return score[a] > score[b] || (score[a] == score[b] && a < b);
      });
      std::copy(order.begin(), order.begin() + keep, out);
      std::sort(out, out + keep);
    }
    p.indptr[s + 1] = p.indptr[s] + static_cast<int32_t>(keep);
  }
}

void HeadNorms(const float* x, int64_t rows, int64_t num_heads, int64_t head_dim, float* out) {
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t h = 0; h < num_heads; ++h) {
      const float* v = x + (t * num_heads + h) * head_dim;
      double sum = 0.0;
      for (int64_t i = 0; i < head_dim; ++i) sum += static_cast<double>(v[i]) * v[i];
      out[t * num_heads + h] = static_cast<float>(std::sqrt(sum));
    }
  }
}

void MaskHeadGroups(float* x, int64_t num_seqs, const int32_t* q_indptr, int64_t num_heads, int64_t num_groups,
                    int64_t head_dim, const int32_t* indptr, const int32_t* indices) {
  const int64_t r = num_heads / num_groups;
  thread_local std::vector<char> selected;
  selected.resize(num_groups);
  for (int64_t s = 0; s < num_seqs; ++s) {
    std::fill(selected.begin(), selected.end(), 0);
    for (int32_t i = indptr[s]; i < indptr[s + 1]; ++i) selected[indices[i]] = 1;
    for (int64_t g = 0; g < num_groups; ++g) {
      if (selected[g]) continue;
      for (int32_t t = q_indptr[s]; t < q_indptr[s + 1]; ++t) {
        std::fill_n(x + (t * num_heads + g * r) * head_dim, r * head_dim, 0.0f);
      }
    }
  }
}

}  // namespace polar::kernels::cpu
