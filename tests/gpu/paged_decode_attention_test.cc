// Selective paged decode attention (kernels/cuda) against the CPU reference
// (kernels/cpu/paged_attention) on the same fp16/bf16-rounded inputs: head
// dims, GQA ratios, block sizes, context lengths from 1 to 16k, selections of
// none / one / some / all groups mixed in one batch, both dtypes, and sparse
// against dense-with-mask. Outputs are poisoned with NaN before each launch so
// an unwritten element fails. Skips itself where no CUDA device exists.
#include "kernels/cuda/paged_decode_attention.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/paged_attention.h"
#include "tests/gpu/gpu_test_util.h"

namespace polar::kernels::cuda {
namespace {

// Selection of one sequence: kAll, kNone, or a count of random distinct groups.
constexpr int kAll = -1;

struct Case {
  AttentionDtype dtype = AttentionDtype::kFp16;
  int num_q_heads = 8, num_kv_heads = 8, head_dim = 128, block_size = 16;
  std::vector<int> context_lens;
  std::vector<int> selected;  // per sequence: kAll or a count; empty = dense (no lists)
  int sliding_window = 0;
  KvLayout layout = KvLayout::kNHD;  // of the GPU's cache; the CPU reference reads NHD
};

// Inputs of one case, rounded to the 16-bit type; the float copies are the
// exact values the GPU sees.
struct Inputs {
  std::vector<uint16_t> q, k_cache, v_cache;  // device bits
  std::vector<float> q_f, k_f, v_f;           // the same values in fp32
  std::vector<int32_t> context_lens, block_indptr, block_ids, group_indptr, group_indices;
};

Inputs MakeInputs(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int num_seqs = static_cast<int>(c.context_lens.size());
  const int64_t row = int64_t{c.num_kv_heads} * c.head_dim;
  Inputs in;
  int total_blocks = 0;
  for (int len : c.context_lens) total_blocks += (len + c.block_size - 1) / c.block_size;
  const int num_blocks = total_blocks + 3;  // spare blocks nobody owns
  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);  // block tables point all over the cache
  in.block_indptr.push_back(0);
  int next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const int nb = (c.context_lens[s] + c.block_size - 1) / c.block_size;
    for (int b = 0; b < nb; ++b) in.block_ids.push_back(pool[next++]);
    in.block_indptr.push_back(static_cast<int32_t>(in.block_ids.size()));
    in.context_lens.push_back(c.context_lens[s]);
  }
  auto fill = [&](std::vector<uint16_t>& bits, std::vector<float>& f, size_t n) {
    bits.resize(n);
    f.resize(n);
    for (size_t i = 0; i < n; ++i) {
      bits[i] = ToBits(normal(rng), c.dtype);
      f[i] = FromBits(bits[i], c.dtype);
    }
  };
  // Every cache slot gets random data, spare blocks too: a kernel reading the
  // wrong block gets wrong numbers, not zeros.
  fill(in.k_cache, in.k_f, static_cast<size_t>(num_blocks) * c.block_size * row);
  fill(in.v_cache, in.v_f, static_cast<size_t>(num_blocks) * c.block_size * row);
  fill(in.q, in.q_f, static_cast<size_t>(num_seqs) * c.num_q_heads * c.head_dim);
  if (!c.selected.empty()) {
    in.group_indptr.push_back(0);
    for (int s = 0; s < num_seqs; ++s) {
      std::vector<int32_t> groups(c.num_kv_heads);
      std::iota(groups.begin(), groups.end(), 0);
      std::shuffle(groups.begin(), groups.end(), rng);
      const int count = c.selected[s] == kAll ? c.num_kv_heads : c.selected[s];
      groups.resize(count);
      std::sort(groups.begin(), groups.end());
      in.group_indices.insert(in.group_indices.end(), groups.begin(), groups.end());
      in.group_indptr.push_back(static_cast<int32_t>(in.group_indices.size()));
    }
  }
  return in;
}

// [num_blocks, block_size, num_kv_heads, head_dim] -> [num_blocks, num_kv_heads, block_size, head_dim]
std::vector<uint16_t> NhdToHnd(const std::vector<uint16_t>& nhd, const Case& c) {
  const size_t d = c.head_dim, heads = c.num_kv_heads, rows = c.block_size;
  std::vector<uint16_t> hnd(nhd.size());
  for (size_t block = 0; block < nhd.size() / (rows * heads * d); ++block) {
    for (size_t r = 0; r < rows; ++r) {
      for (size_t h = 0; h < heads; ++h) {
        std::memcpy(&hnd[((block * heads + h) * rows + r) * d], &nhd[((block * rows + r) * heads + h) * d],
                    d * sizeof(uint16_t));
      }
    }
  }
  return hnd;
}

// Runs the GPU kernel on in (with or without its selection lists) and returns
// the output as floats.
std::vector<float> RunGpu(const Case& c, const Inputs& in, bool use_selection) {
  const int num_seqs = static_cast<int>(c.context_lens.size());
  const size_t out_elems = static_cast<size_t>(num_seqs) * c.num_q_heads * c.head_dim;
  const bool hnd = c.layout == KvLayout::kHND;
  DeviceBuffer q = DeviceBuffer::From(in.q),
               k = DeviceBuffer::From(hnd ? NhdToHnd(in.k_cache, c) : in.k_cache),
               v = DeviceBuffer::From(hnd ? NhdToHnd(in.v_cache, c) : in.v_cache),
               lens = DeviceBuffer::From(in.context_lens),
               indptr = DeviceBuffer::From(in.block_indptr), ids = DeviceBuffer::From(in.block_ids),
               gptr = DeviceBuffer::From(in.group_indptr), gidx = DeviceBuffer::From(in.group_indices);
  DeviceBuffer out(out_elems * sizeof(uint16_t));
  PagedDecodeAttentionParams p;
  p.dtype = c.dtype;
  p.q = q.get();
  p.k_cache = k.get();
  p.v_cache = v.get();
  p.kv_layout = c.layout;
  p.out = out.get();
  p.num_seqs = num_seqs;
  p.num_q_heads = c.num_q_heads;
  p.num_kv_heads = c.num_kv_heads;
  p.head_dim = c.head_dim;
  p.block_size = c.block_size;
  p.context_lens = lens.as<int32_t>();
  p.block_indptr = indptr.as<int32_t>();
  p.block_ids = ids.as<int32_t>();
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  p.sliding_window = c.sliding_window;
  if (use_selection && !c.selected.empty()) {
    p.group_indptr = gptr.as<int32_t>();
    p.group_indices = gidx.as<int32_t>();
  }
  size_t ws_bytes = 0;
  EXPECT_EQ(PagedDecodeAttentionWorkspaceBytes(p, &ws_bytes), cudaSuccess);
  DeviceBuffer ws(ws_bytes);
  EXPECT_EQ(cudaMemset(ws.get(), 0x7f, ws_bytes), cudaSuccess);  // stale garbage, not zeros
  EXPECT_EQ(cudaMemset(out.get(), 0xff, out_elems * sizeof(uint16_t)), cudaSuccess);  // NaN poison
  EXPECT_EQ(PagedDecodeAttention(p, ws.get(), ws_bytes, nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint16_t> bits(out_elems);
  EXPECT_EQ(cudaMemcpy(bits.data(), out.get(), out_elems * sizeof(uint16_t), cudaMemcpyDeviceToHost),
            cudaSuccess);
  std::vector<float> result(out_elems);
  for (size_t i = 0; i < out_elems; ++i) result[i] = FromBits(bits[i], c.dtype);
  return result;
}

std::vector<float> RunCpu(const Case& c, const Inputs& in) {
  const int num_seqs = static_cast<int>(c.context_lens.size());
  std::vector<float> out(static_cast<size_t>(num_seqs) * c.num_q_heads * c.head_dim, NAN);
  std::vector<int32_t> q_indptr(num_seqs + 1);
  std::iota(q_indptr.begin(), q_indptr.end(), 0);  // decode: one query row per sequence
  cpu::PagedAttentionParams p;
  p.q = in.q_f.data();
  p.k_cache = in.k_f.data();
  p.v_cache = in.v_f.data();
  p.out = out.data();
  p.num_seqs = num_seqs;
  p.num_q_heads = c.num_q_heads;
  p.num_kv_heads = c.num_kv_heads;
  p.head_dim = c.head_dim;
  p.block_size = c.block_size;
  p.q_indptr = q_indptr.data();
  p.context_lens = in.context_lens.data();
  p.block_indptr = in.block_indptr.data();
  p.block_ids = in.block_ids.data();
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  p.sliding_window = c.sliding_window;
  if (!c.selected.empty()) {
    p.group_indptr = in.group_indptr.data();
    p.group_indices = in.group_indices.data();
  }
  cpu::PagedAttention(p);
  return out;
}

// Relative L2 error of one head's output row tolerated: P·V takes P rounded
// to the input type, and the output is rounded once more.
double Tolerance(AttentionDtype dtype) { return dtype == AttentionDtype::kFp16 ? 3e-3 : 1.5e-2; }

bool Selected(const Case& c, const Inputs& in, int seq, int kv_head) {
  if (c.selected.empty()) return true;
  auto begin = in.group_indices.begin() + in.group_indptr[seq];
  auto end = in.group_indices.begin() + in.group_indptr[seq + 1];
  return std::find(begin, end, kv_head) != end;
}

// Compares got with want row by row: unselected heads exactly zero, selected
// heads finite and within tol. Returns the worst relative error.
double CompareRows(const Case& c, const Inputs& in, const std::vector<float>& got,
                   const std::vector<float>& want, double tol, const std::string& what) {
  const int group = c.num_q_heads / c.num_kv_heads;
  double worst = 0.0;
  for (size_t seq = 0; seq < c.context_lens.size(); ++seq) {
    for (int h = 0; h < c.num_q_heads; ++h) {
      const size_t base = (seq * c.num_q_heads + h) * c.head_dim;
      if (!Selected(c, in, static_cast<int>(seq), h / group)) {
        for (int d = 0; d < c.head_dim; ++d) {
          if (got[base + d] != 0.0f) {
            ADD_FAILURE() << what << ": unselected seq " << seq << " head " << h << " dim " << d
                          << " = " << got[base + d] << ", want 0";
            return INFINITY;
          }
        }
        continue;
      }
      double err = 0.0, norm = 0.0;
      for (int d = 0; d < c.head_dim; ++d) {
        if (!std::isfinite(got[base + d])) {
          ADD_FAILURE() << what << ": seq " << seq << " head " << h << " dim " << d
                        << " not finite (unwritten?)";
          return INFINITY;
        }
        const double diff = double(got[base + d]) - want[base + d];
        err += diff * diff;
        norm += double(want[base + d]) * want[base + d];
      }
      const double rel = std::sqrt(err / std::max(norm, 1e-30));
      worst = std::max(worst, rel);
      if (rel > tol) {
        ADD_FAILURE() << what << ": seq " << seq << " (context " << c.context_lens[seq] << ") head "
                      << h << " relative error " << rel << " > " << tol;
        return rel;
      }
    }
  }
  return worst;
}

std::string Describe(const Case& c) {
  return std::string(DtypeName(c.dtype)) + (c.layout == KvLayout::kHND ? " HND" : " NHD") + " Hq=" + std::to_string(c.num_q_heads) +
         " Hkv=" + std::to_string(c.num_kv_heads) + " D=" + std::to_string(c.head_dim) +
         " bs=" + std::to_string(c.block_size) + " seqs=" + std::to_string(c.context_lens.size());
}

// GPU against CPU; with a selection also sparse against dense-with-mask.
void Check(const Case& c, uint32_t seed) {
  SCOPED_TRACE(Describe(c));
  const Inputs in = MakeInputs(c, seed);
  const std::vector<float> want = RunCpu(c, in);
  const std::vector<float> got = RunGpu(c, in, /*use_selection=*/true);
  CompareRows(c, in, got, want, Tolerance(c.dtype), "gpu vs cpu");
  if (!c.selected.empty()) {
    // Dense on the same inputs, then masked: selected rows must match the
    // sparse launch (which splits the work differently), the rest are zeros.
    std::vector<float> dense = RunGpu(c, in, /*use_selection=*/false);
    const int group = c.num_q_heads / c.num_kv_heads;
    for (size_t seq = 0; seq < c.context_lens.size(); ++seq) {
      for (int h = 0; h < c.num_q_heads; ++h) {
        if (Selected(c, in, static_cast<int>(seq), h / group)) continue;
        std::fill_n(dense.begin() + (seq * c.num_q_heads + h) * c.head_dim, c.head_dim, 0.0f);
      }
    }
    CompareRows(c, in, got, dense, Tolerance(c.dtype), "sparse vs dense-with-mask");
  }
}

constexpr AttentionDtype kDtypes[] = {AttentionDtype::kFp16, AttentionDtype::kBf16};

TEST(PagedDecodeAttentionGpuTest, MatchesCpuAcrossShapes) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 1;
  for (AttentionDtype dtype : kDtypes) {
    for (int head_dim : {64, 128}) {
      // GQA ratios 1, 4, 8.
      for (auto [hq, hkv] : {std::pair{8, 8}, {16, 4}, {32, 4}}) {
        for (int block_size : {16, 32}) {
          Case c{dtype, hq, hkv, head_dim, block_size};
          // Lengths: 1, around the block and tile sizes, non-multiples, longer.
          c.context_lens = {1, 15, 16, 17, 33, 100, 1000, 517};
          // Selections: all, none, one, some, mixed in one batch.
          c.selected = {kAll, 1, 0, 2, kAll, 1, 3, kAll};
          Check(c, seed++);
        }
      }
    }
  }
}

TEST(PagedDecodeAttentionGpuTest, DenseWithoutSelectionLists) {
  SKIP_WITHOUT_GPU();
  for (AttentionDtype dtype : kDtypes) {
    Case c{dtype, 32, 8, 128, 16};
    c.context_lens = {2048, 1, 700, 4097};
    Check(c, 42);
  }
}

TEST(PagedDecodeAttentionGpuTest, LongContext16k) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (AttentionDtype dtype : kDtypes) {
    for (auto [hq, hkv] : {std::pair{8, 8}, {32, 4}}) {
      Case c{dtype, hq, hkv, 128, 16};
      c.context_lens = {16384, 1, 16383, 5000};
      c.selected = {kAll, kAll, 1, 2};
      Check(c, seed++);
    }
  }
}

TEST(PagedDecodeAttentionGpuTest, ManySequencesMixedLengthsAndDensities) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 200;
  for (AttentionDtype dtype : kDtypes) {
    for (auto [hq, hkv, head_dim] : {std::tuple{32, 4, 128}, {16, 16, 64}, {32, 8, 128}}) {
      std::mt19937 rng(seed);
      Case c{dtype, hq, hkv, head_dim, 32};
      for (int s = 0; s < 96; ++s) {
        c.context_lens.push_back(std::uniform_int_distribution<int>(1, 3000)(rng));
        c.selected.push_back(std::uniform_int_distribution<int>(0, hkv)(rng));
      }
      Check(c, seed++);
    }
  }
}

TEST(PagedDecodeAttentionGpuTest, WideAndOddGroups) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 300;
  // Group sizes 16 (all 16 mma rows), 12 and 2: not only powers of two.
  for (auto [hq, hkv] : {std::pair{32, 2}, {24, 2}, {8, 4}}) {
    for (AttentionDtype dtype : kDtypes) {
      Case c{dtype, hq, hkv, 128, 16};
      c.context_lens = {300, 1, 64, 2000};
      c.selected = {kAll, 1, 1, kAll};
      Check(c, seed++);
    }
  }
}

TEST(PagedDecodeAttentionGpuTest, HndLayout) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 700;
  for (AttentionDtype dtype : kDtypes) {
    for (auto [hq, hkv, head_dim, block_size] :
         {std::tuple{32, 8, 128, 16}, {8, 8, 64, 32}, {32, 4, 128, 32}}) {
      Case c{dtype, hq, hkv, head_dim, block_size};
      c.context_lens = {1, 17, 1000, 4100, 33};
      c.selected = {kAll, 1, 0, kAll, 2};
      c.layout = KvLayout::kHND;
      Check(c, seed++);
    }
  }
}

TEST(PagedDecodeAttentionGpuTest, SlidingWindow) {
  SKIP_WITHOUT_GPU();
  for (AttentionDtype dtype : kDtypes) {
    Case c{dtype, 16, 4, 64, 16};
    c.context_lens = {50, 1000, 7, 129};
    c.selected = {kAll, 2, 1, kAll};
    c.sliding_window = 100;
    Check(c, 400);
  }
}

TEST(PagedDecodeAttentionGpuTest, NothingSelectedWritesZeros) {
  SKIP_WITHOUT_GPU();
  Case c{AttentionDtype::kBf16, 32, 8, 128, 16};
  c.context_lens = {100, 3000, 1};
  c.selected = {0, 0, 0};
  const Inputs in = MakeInputs(c, 500);
  const std::vector<float> got = RunGpu(c, in, /*use_selection=*/true);
  EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](float x) { return x == 0.0f; }));
}

TEST(PagedDecodeAttentionGpuTest, RejectsUnsupportedShapesAndSmallWorkspace) {
  SKIP_WITHOUT_GPU();
  PagedDecodeAttentionParams p;
  p.num_seqs = 4;
  p.num_q_heads = 32;
  p.num_kv_heads = 8;
  p.head_dim = 128;
  p.block_size = 16;
  size_t bytes = 0;
  ASSERT_EQ(PagedDecodeAttentionWorkspaceBytes(p, &bytes), cudaSuccess);
  EXPECT_GT(bytes, 0u);
  size_t more_seqs = 0;
  p.num_seqs = 400;
  ASSERT_EQ(PagedDecodeAttentionWorkspaceBytes(p, &more_seqs), cudaSuccess);
  EXPECT_GE(more_seqs, bytes);
  p.num_seqs = 4;

  PagedDecodeAttentionParams bad = p;
  bad.head_dim = 96;
  EXPECT_EQ(PagedDecodeAttentionWorkspaceBytes(bad, &bytes), cudaErrorInvalidValue);
  bad = p;
  bad.num_q_heads = 8 * 32;  // group of 32 query heads
  EXPECT_EQ(PagedDecodeAttentionWorkspaceBytes(bad, &bytes), cudaErrorInvalidValue);
  bad = p;
  bad.num_q_heads = 30;  // not a multiple of the KV heads
  EXPECT_EQ(PagedDecodeAttentionWorkspaceBytes(bad, &bytes), cudaErrorInvalidValue);

  // A real launch with a workspace one byte short is refused before any work.
  Case c{AttentionDtype::kFp16, 32, 8, 128, 16};
  c.context_lens = {10, 20, 30, 40};
  const Inputs in = MakeInputs(c, 600);
  DeviceBuffer q = DeviceBuffer::From(in.q), k = DeviceBuffer::From(in.k_cache),
               v = DeviceBuffer::From(in.v_cache), lens = DeviceBuffer::From(in.context_lens),
               indptr = DeviceBuffer::From(in.block_indptr), ids = DeviceBuffer::From(in.block_ids);
  DeviceBuffer out(4 * 32 * 128 * sizeof(uint16_t));
  p.q = q.get();
  p.k_cache = k.get();
  p.v_cache = v.get();
  p.out = out.get();
  p.context_lens = lens.as<int32_t>();
  p.block_indptr = indptr.as<int32_t>();
  p.block_ids = ids.as<int32_t>();
  ASSERT_EQ(PagedDecodeAttentionWorkspaceBytes(p, &bytes), cudaSuccess);
  DeviceBuffer ws(bytes);
  EXPECT_EQ(PagedDecodeAttention(p, ws.get(), bytes - 1, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(PagedDecodeAttention(p, ws.get(), bytes, nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace polar::kernels::cuda
