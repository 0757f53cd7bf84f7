// See gather_mlp.h. fc1 runs Linear's register tile (dot_tile.h: R rows by C
// neurons) over the selected weight rows; fc2 works in blocks of R rows by 64
// output columns with per-lane accumulators. Tile and block shapes only
// decide which element is computed when and by which thread, never the order
// of its terms (gather_mlp.h). Only fused multiply-add and add intrinsics are
// used, so compiler contraction cannot change an order.
#include "kernels/cpu/gather_mlp.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/cpu/dot_tile.h"

namespace polar::kernels::cpu {
namespace {

float Relu(float y) { return y > 0.0f ? y : 0.0f; }  // as kernels::cpu::Relu

// ---- fc1 ----

// h[r, c] = ReLU(x[r] · w1[idx[c]] + b1[idx[c]]) for an R x C tile: Linear's
// tile (dot_tile.h) over gathered weight rows.
// x: [R, in] (row stride in); idx: [C]; h: the tile's first element, row
// stride h_stride.
template <int R, int C>
void Fc1Tile(const float* x, int64_t in, const float* w1, const float* b1, const int32_t* idx, float* h,
             int64_t h_stride) {
  const float* w[C];
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) w[c] = w1 + static_cast<int64_t>(idx[c]) * in;
  DotTile<R, C>(x, in, w, [&](int r, int c, float dot) { h[r * h_stride + c] = Relu(dot + b1[idx[c]]); });
}

using Fc1Fn = void (*)(const float*, int64_t, const float*, const float*, const int32_t*, float*, int64_t);
constexpr int kFc1Rows = 4, kFc1Cols = 3;  // 12 accumulators + 3 w + 1 x vectors: the 16 ymm registers

template <int R>
Fc1Fn Fc1For(int cols) {
  switch (cols) {
    case 1: return &Fc1Tile<R, 1>;
    case 2: return &Fc1Tile<R, 2>;
    default: return &Fc1Tile<R, 3>;
  }
}

Fc1Fn PickFc1(int rows, int cols) {
  switch (rows) {
    case 1: return Fc1For<1>(cols);
    case 2: return Fc1For<2>(cols);
    case 3: return Fc1For<3>(cols);
    default: return Fc1For<4>(cols);
  }
}

// ---- fc2 ----

// One block of R rows x up to kBlockCols output columns of fc2. The
// selected neurons are walked once, in order, each contributing its W2t row
// segment (contiguous, so the hardware prefetcher streams it) to the lane
// accumulator of its id mod 8, which lives in L1: lane j then sums its terms
// in increasing neuron id, the dense sum's order. h: [R, k] (row stride k);
// y: row stride out.
constexpr int64_t kBlockVectors = 8;
constexpr int64_t kBlockCols = kBlockVectors * kLanes;

template <int R>
void Fc2Block(const float* h, int64_t k, const float* w2t, int64_t out, const int32_t* indices, const float* b2,
              int64_t col, int64_t cols, float* y, bool accumulate) {
  const int64_t vectors = (cols + kLanes - 1) / kLanes;
  const int64_t full = cols / kLanes;  // vectors without a partial tail
  const __m256i tail_mask = FirstLanes(cols - full * kLanes);
  __m256 acc[kLanes][R][kBlockVectors];
  for (int64_t j = 0; j < kLanes; ++j) {
    for (int r = 0; r < R; ++r) {
      for (int64_t v = 0; v < vectors; ++v) acc[j][r][v] = _mm256_setzero_ps();
    }
  }
  for (int64_t p = 0; p < k; ++p) {
    const float* w = w2t + static_cast<int64_t>(indices[p]) * out + col;
    auto& lane = acc[indices[p] & (kLanes - 1)];
    __m256 hv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) hv[r] = _mm256_broadcast_ss(h + r * k + p);
    for (int64_t v = 0; v < full; ++v) {
      const __m256 wv = _mm256_loadu_ps(w + v * kLanes);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) lane[r][v] = _mm256_fmadd_ps(hv[r], wv, lane[r][v]);
    }
    if (full < vectors) {
      const __m256 wv = _mm256_maskload_ps(w + full * kLanes, tail_mask);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) lane[r][full] = _mm256_fmadd_ps(hv[r], wv, lane[r][full]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int64_t v = 0; v < vectors; ++v) {
      const auto& l = acc;
      const __m256 dot = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(l[0][r][v], l[4][r][v]),
                                                     _mm256_add_ps(l[2][r][v], l[6][r][v])),
                                       _mm256_add_ps(_mm256_add_ps(l[1][r][v], l[5][r][v]),
                                                     _mm256_add_ps(l[3][r][v], l[7][r][v])));
      const int64_t c = col + v * kLanes;
      float* o = y + r * out + c;
      if (v < full) {
        __m256 result = _mm256_add_ps(dot, _mm256_loadu_ps(b2 + c));
        if (accumulate) result = _mm256_add_ps(_mm256_loadu_ps(o), result);
        _mm256_storeu_ps(o, result);
      } else {
        __m256 result = _mm256_add_ps(dot, _mm256_maskload_ps(b2 + c, tail_mask));
        if (accumulate) result = _mm256_add_ps(_mm256_maskload_ps(o, tail_mask), result);
        _mm256_maskstore_ps(o, tail_mask, result);
      }
    }
  }
}

using Fc2Fn = void (*)(const float*, int64_t, const float*, int64_t, const int32_t*, const float*, int64_t, int64_t,
                       float*, bool);
constexpr int kFc2Rows = 4;

Fc2Fn PickFc2(int rows) {
  switch (rows) {
    case 1: return &Fc2Block<1>;
    case 2: return &Fc2Block<2>;
    case 3: return &Fc2Block<3>;
    default: return &Fc2Block<4>;
  }
}

}  // namespace

int64_t SelectMlpNeurons(const float* scores, int64_t rows, int64_t ffn, int64_t k, int32_t* indices) {
  k = std::clamp<int64_t>(k, 0, ffn);
  if (k == ffn) {
    std::iota(indices, indices + k, 0);
    return k;
  }
  if (k == 0) return 0;
  std::vector<float> sum(ffn, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = scores + r * ffn;
    for (int64_t f = 0; f < ffn; ++f) sum[f] += Relu(row[f]);
  }
  // NaN ranks last (Relu would have made it 0).
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = scores + r * ffn;
    for (int64_t f = 0; f < ffn; ++f) {
      if (std::isnan(row[f])) sum[f] = -std::numeric_limits<float>::infinity();
    }
  }
  std::vector<int32_t> order(ffn);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return sum[a] > sum[b] || (sum[a] == sum[b] && a < b); });
  std::copy(order.begin(), order.begin() + k, indices);
  std::sort(indices, indices + k);
  return k;
}

void GatherFc1Relu(const float* x, const float* w1, const float* b1, const int32_t* indices, int64_t rows,
                   int64_t in, int64_t k, float* h) {
  if (rows <= 0 || k <= 0) return;
  const int tile_rows = static_cast<int>(std::min<int64_t>(kFc1Rows, rows));
  const int64_t col_tiles = (k + kFc1Cols - 1) / kFc1Cols;
  const bool parallel = col_tiles > 1 && rows * in * k >= kMinParallelMacs;
  // Threads take neurons; each walks all rows, its weight rows staying in cache.
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t t = 0; t < col_tiles; ++t) {
    const int64_t c = t * kFc1Cols;
    const int cols = static_cast<int>(std::min<int64_t>(kFc1Cols, k - c));
    for (int64_t r = 0; r < rows; r += tile_rows) {
      const int n = static_cast<int>(std::min<int64_t>(tile_rows, rows - r));
      PickFc1(n, cols)(x + r * in, in, w1, b1, indices + c, h + r * k + c, k);
    }
  }
}

void GatherFc2(const float* h, const float* w2t, const float* b2, const int32_t* indices, int64_t rows, int64_t k,
               int64_t out, float* y, bool accumulate) {
  if (rows <= 0 || out <= 0) return;
  k = std::max<int64_t>(k, 0);
  const int64_t blocks = (out + kBlockCols - 1) / kBlockCols;
  const bool parallel = blocks > 1 && rows * k * out >= kMinParallelMacs;
  const int tile_rows = static_cast<int>(std::min<int64_t>(kFc2Rows, rows));
  // Threads take output columns; the reduction over neurons is never split.
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t col = b * kBlockCols;
    const int64_t cols = std::min(kBlockCols, out - col);
    for (int64_t r = 0; r < rows; r += tile_rows) {
      const int n = static_cast<int>(std::min<int64_t>(tile_rows, rows - r));
      PickFc2(n)(h + r * k, k, w2t, out, indices, b2, col, cols, y + r * out, accumulate);
    }
  }
}

void MaskMlpNeurons(float* h, int64_t rows, int64_t ffn, const int32_t* indices, int64_t k) {
  std::vector<char> selected(ffn, 0);
  for (int64_t i = 0; i < k; ++i) selected[indices[i]] = 1;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = h + r * ffn;
    for (int64_t f = 0; f < ffn; ++f) {
      if (!selected[f]) row[f] = 0.0f;
    }
  }
}

}  // namespace polar::kernels::cpu
