// See paged_attention.h.
#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace polar::kernels::cpu {
namespace {

// The query heads of one KV group for one token against its sequence's keys
// [key_begin, key_end): each K and V row is read once for all `group` heads
// (per head the arithmetic is the same as attending it alone).
// q: [group, d] (consecutive heads); out: [group, d].
void AttendGroup(const PagedAttentionParams& p, const float* q, int64_t group, int64_t seq, int64_t kv_head,
                 int64_t key_begin, int64_t key_end, std::vector<float>& scores, float* out) {
  const int32_t* blocks = p.block_ids + p.block_indptr[seq];
  const int64_t d = p.head_dim;
  const int64_t row_stride = p.num_kv_heads * d;
  auto key_row = [&](const float* cache, int64_t pos) {
    const int64_t block = blocks[pos / p.block_size];
    return cache + (block * p.block_size + pos % p.block_size) * row_stride + kv_head * d;
  };
  const int64_t n = key_end - key_begin;
  // One scratch per thread, grown to the longest context (no allocation per
  // call): [group, n] scores, then group maxima and group denominators.
  if (scores.size() < static_cast<size_t>(group * (n + 2))) scores.resize(group * (n + 2));
  float* max_score = scores.data() + group * n;
  float* denom = max_score + group;
  std::fill(max_score, max_score + group, -std::numeric_limits<float>::infinity());
  std::fill(denom, denom + group, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float* k = key_row(p.k_cache, key_begin + j);
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = q + g * d;
      float dot = 0.0f;
      for (int64_t i = 0; i < d; ++i) dot += qg[i] * k[i];
      scores[g * n + j] = dot * p.scale;
      max_score[g] = std::max(max_score[g], scores[g * n + j]);
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float* row = scores.data() + g * n;
    for (int64_t j = 0; j < n; ++j) {
      row[j] = std::exp(row[j] - max_score[g]);
      denom[g] += row[j];
    }
  }
  std::fill(out, out + group * d, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float* v = key_row(p.v_cache, key_begin + j);
    for (int64_t g = 0; g < group; ++g) {
      const float w = scores[g * n + j] / denom[g];
      float* og = out + g * d;
      for (int64_t i = 0; i < d; ++i) og[i] += w * v[i];
    }
  }
}

}  // namespace

void PagedAttention(const PagedAttentionParams& p) {
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  const int64_t d = p.head_dim;
  const int64_t num_tokens = p.q_indptr[p.num_seqs];
  // Flatten (token, kv group) so threads share work across sequences of very
  // different lengths.
  const int64_t items = num_tokens * p.num_kv_heads;
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 4)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t token = item / p.num_kv_heads;
      const int64_t kv_head = item % p.num_kv_heads;
      const int64_t seq =
          std::upper_bound(p.q_indptr, p.q_indptr + p.num_seqs + 1, static_cast<int32_t>(token)) -
          p.q_indptr - 1;
      float* out_group = p.out + (token * p.num_q_heads + kv_head * group) * d;
      bool selected = true;
      if (p.group_indptr != nullptr) {
        const int32_t* begin = p.group_indices + p.group_indptr[seq];
        const int32_t* end = p.group_indices + p.group_indptr[seq + 1];
        selected = std::find(begin, end, static_cast<int32_t>(kv_head)) != end;
      }
      if (!selected) {
        std::memset(out_group, 0, sizeof(float) * group * d);
        continue;
      }
      const int64_t q_len = p.q_indptr[seq + 1] - p.q_indptr[seq];
      const int64_t position = p.context_lens[seq] - q_len + (token - p.q_indptr[seq]);
      const int64_t key_end = position + 1;
      const int64_t key_begin =
          p.sliding_window > 0 ? std::max<int64_t>(0, key_end - p.sliding_window) : 0;
      AttendGroup(p, p.q + (token * p.num_q_heads + kv_head * group) * d, group, seq, kv_head, key_begin, key_end,
                  scores, out_group);
    }
  }
}

void AppendKv(const float* k, const float* v, const int64_t* slots, int64_t num_tokens,
              int64_t kv_row_elems, float* k_cache, float* v_cache) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::memcpy(k_cache + slots[t] * kv_row_elems, k + t * kv_row_elems, sizeof(float) * kv_row_elems);
    std::memcpy(v_cache + slots[t] * kv_row_elems, v + t * kv_row_elems, sizeof(float) * kv_row_elems);
  }
}

}  // namespace polar::kernels::cpu
