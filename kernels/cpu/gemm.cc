// See gemm.h. The kernel computes out[r, c] as a dot product along `in`
// (x rows and w rows are both contiguous there, so nothing is packed), R rows
// x C columns at a time in R*C vector accumulators (dot_tile.h). Every tile
// shape, the remainder tiles included, runs the same per-element sequence of
// explicit intrinsics. This file is also compiled with -ffp-contract=off, a guard so
// that no multiply and add written separately here can become one FMA in one
// tile shape and stay two instructions in another.
#include "kernels/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <utility>

#include "kernels/cpu/dot_tile.h"

namespace polar::kernels::cpu {
namespace {

constexpr int kMaxTileCols = 8;
// A thread's column panel of w is re-read once per row tile, so it should
// stay in the per-core L2 (2 MiB on the machines measured) next to the x rows.
constexpr int64_t kPanelBytes = 512 * 1024;

// One R x C block of out. x: [R, in] (row stride in); w: [C, in] (row stride
// in); bias: [C] or nullptr; out: [R, out_stride], the block's first element.
template <int R, int C>
void LinearTile(const float* x, const float* w, int64_t in, const float* bias, bool accumulate, float* out,
                int64_t out_stride) {
  const float* rows[C];
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) rows[c] = w + c * in;
  DotTile<R, C>(x, in, rows, [&](int r, int c, float dot) {
    float y = dot;
    if (bias != nullptr) y = y + bias[c];
    float* o = out + r * out_stride + c;
    *o = accumulate ? *o + y : y;
  });
}

// LinearTile<rows, cols> for 1..4 rows and 1..8 columns: the main shapes of
// MainTile and every remainder of them.
using TileFn = void (*)(const float*, const float*, int64_t, const float*, bool, float*, int64_t);

template <int R, int... Cs>
constexpr TileFn TileFor(int cols, std::integer_sequence<int, Cs...>) {
  TileFn fn = nullptr;
  ((fn = (cols == Cs + 1) ? &LinearTile<R, Cs + 1> : fn), ...);
  return fn;
}

TileFn PickTile(int rows, int cols) {
  using AllCols = std::make_integer_sequence<int, kMaxTileCols>;
  switch (rows) {
    case 1: return TileFor<1>(cols, AllCols{});
    case 2: return TileFor<2>(cols, AllCols{});
    case 3: return TileFor<3>(cols, AllCols{});
    default: return TileFor<4>(cols, AllCols{});
  }
}

// The register block for a call with `rows` rows: 8 to 12 accumulators, plus
// the x and w vectors of one step, fit the 16 ymm registers.
struct TileShape {
  int rows;
  int cols;
};
TileShape MainTile(int64_t rows) {
  if (rows >= 4) return {4, 3};
  if (rows == 3) return {3, 4};
  if (rows == 2) return {2, 6};
  return {1, 8};
}

}  // namespace

void Linear(const float* x, const float* w, const float* bias, int64_t rows, int64_t in,
            int64_t out_features, float* out, bool accumulate) {
  if (rows <= 0 || out_features <= 0) return;
  const TileShape tile = MainTile(rows);
  // Column panels: at least one per thread (a multiple of the thread count so
  // they split evenly), small enough to stay in L2, whole tiles wide.
  const int64_t threads = std::max(1, omp_get_max_threads());
  const int64_t col_tiles = (out_features + tile.cols - 1) / tile.cols;
  int64_t panels = std::max<int64_t>(1, out_features * in * int64_t{sizeof(float)} / kPanelBytes);
  panels = std::min(col_tiles, (panels + threads - 1) / threads * threads);
  const int64_t panel_cols = (col_tiles + panels - 1) / panels * tile.cols;
  panels = (out_features + panel_cols - 1) / panel_cols;
  const bool parallel = panels > 1 && rows * in * out_features >= kMinParallelMacs;

#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t col_begin = p * panel_cols;
    const int64_t col_end = std::min(out_features, col_begin + panel_cols);
    for (int64_t r = 0; r < rows; r += tile.rows) {
      const int tile_rows = static_cast<int>(std::min<int64_t>(tile.rows, rows - r));
      for (int64_t c = col_begin; c < col_end; c += tile.cols) {
        const int tile_cols = static_cast<int>(std::min<int64_t>(tile.cols, col_end - c));
        PickTile(tile_rows, tile_cols)(x + r * in, w + c * in, in, bias == nullptr ? nullptr : bias + c,
                                       accumulate, out + r * out_features + c, out_features);
      }
    }
  }
}

}  // namespace polar::kernels::cpu
