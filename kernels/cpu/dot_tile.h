// The register-tile dot product shared by Linear (gemm.cc) and the MLP
// gather's fc1 (gather_mlp.cc). Both promise gemm.h's summation order, and
// gather_mlp.h promises that fc1 over every neuron equals Linear bit for bit,
// so the two run this one instruction sequence instead of two copies kept
// equal by hand. It uses only fused multiply-add and add intrinsics, so no
// -ffp-contract setting of an including file can change an order. Internal to
// kernels/cpu: it needs AVX2/FMA, which only the kernel library is compiled
// for (-march=x86-64-v3), so it stays out of gemm.h, which the engine includes.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace polar::kernels::cpu {

constexpr int64_t kLanes = 8;
// Below this many multiply-adds (a few microseconds on one core) waking the
// thread team costs more than it saves; with OMP_WAIT_POLICY=passive a wake-up
// alone takes tens of microseconds.
constexpr int64_t kMinParallelMacs = int64_t{1} << 17;

// Lanes [0, n) set: the last, partial chunk of a row reads only its n floats
// and sees zeros in the other lanes (0 * 0 added leaves a lane sum unchanged).
inline __m256i FirstLanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), the order gemm.h documents.
inline float SumLanes(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // l0+l4 .. l3+l7
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                         // (0+4)+(2+6), (1+5)+(3+7)
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One step of 8 terms for every accumulator: acc[r][c] += x_r * w_c, lane by
// lane. The side with fewer vectors is loaded first and kept in registers,
// the other side streams through one register, so R * C + min(R, C) + 1
// registers suffice (at most 16 for the shapes the callers pick). The
// branches differ only in the order of updates to independent accumulators.
template <int R, int C, typename LoadX, typename LoadW>
inline __attribute__((always_inline)) void Step(__m256 (&acc)[R][C], LoadX load_x, LoadW load_w) {
  if constexpr (C <= R) {
    __m256 wv[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) wv[c] = load_w(c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 xv = load_x(r);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  } else {
    __m256 xv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) xv[r] = load_x(r);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m256 wv = load_w(c);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
    }
  }
}

// The R x C dot products of R x rows with C w rows, each in gemm.h's order
// (steps 1 and 2): out(r, c, x_r · w_c) is called for every pair, the caller
// adding its bias and writing the result where and how it needs.
// x: [R, in] (row stride in); w: C row pointers, each [in].
template <int R, int C, typename Out>
inline __attribute__((always_inline)) void DotTile(const float* x, int64_t in, const float* const (&w)[C], Out out) {
  __m256 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  const int64_t full = in - in % kLanes;
  for (int64_t k = 0; k < full; k += kLanes) {
    Step<R, C>(acc, [&](int r) { return _mm256_loadu_ps(x + r * in + k); },
               [&](int c) { return _mm256_loadu_ps(w[c] + k); });
  }
  if (full < in) {
    const __m256i mask = FirstLanes(in - full);
    Step<R, C>(acc, [&](int r) { return _mm256_maskload_ps(x + r * in + full, mask); },
               [&](int c) { return _mm256_maskload_ps(w[c] + full, mask); });
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) out(r, c, SumLanes(acc[r][c]));
  }
}

}  // namespace polar::kernels::cpu
