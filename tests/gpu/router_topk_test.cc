// Router scores and head-group top-k on the GPU (kernels/cuda/router_topk)
// against the CPU: the top-k bit for bit against SelectHeadGroups
// (kernels/cpu/head_select) given the same fp32 scores, including ties, NaN
// and infinite scores, per-sequence keep (none, one, some, all, out of
// range), rows that score sequences out of order, and the dense "all groups"
// mode; the scores GEMM against an fp32 reference of the same fp16/bf16
// inputs; both chained, and captured in a CUDA graph. Outputs are poisoned
// before each launch. Skips itself where no CUDA device exists.
#include "kernels/cuda/router_topk.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/head_select.h"
#include "tests/gpu/gpu_test_util.h"

namespace polar::kernels::cuda {
namespace {

// ---------------------------------------------------------------------------
// Top-k
// ---------------------------------------------------------------------------

struct TopKCase {
  int num_seqs = 4, num_heads = 8, num_groups = 8;
  GroupReduce reduce = GroupReduce::kMax;
  bool keep_all_groups = false;
};

struct TopKInputs {
  std::vector<float> scores;         // [num_rows, num_heads]
  std::vector<int32_t> score_rows;   // [num_seqs]
  std::vector<int32_t> keep;         // [num_seqs]
};

// Random logits with many exact ties (a third of them from 5 values), some
// NaN, and for max also +-inf (a mean of +inf and -inf is NaN, which the
// CPU's comparison sort does not order; the GPU ranks it as -inf).
TopKInputs MakeTopKInputs(const TopKCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  const int num_rows = 2 * c.num_seqs + 1;  // a prefill-like layout: sequences scored by scattered rows
  TopKInputs in;
  in.scores.resize(static_cast<size_t>(num_rows) * c.num_heads);
  for (float& s : in.scores) {
    const int p = pick(rng);
    if (p < 33) {
      s = static_cast<float>(p % 5) - 2.0f;
    } else if (p < 35) {
      s = NAN;
    } else if (p < 37 && c.reduce == GroupReduce::kMax) {
      s = p == 35 ? INFINITY : -INFINITY;
    } else {
      s = normal(rng);
    }
  }
  std::vector<int32_t> rows(num_rows);
  std::iota(rows.begin(), rows.end(), 0);
  std::shuffle(rows.begin(), rows.end(), rng);
  in.score_rows.assign(rows.begin(), rows.begin() + c.num_seqs);
  std::uniform_int_distribution<int> keep(-2, c.num_groups + 3);
  for (int s = 0; s < c.num_seqs; ++s) {
    // Every fourth sequence at an edge: none, one, all, more than all.
    const int edges[] = {0, 1, c.num_groups, c.num_groups + 7};
    in.keep.push_back(s % 4 == 0 ? edges[(s / 4) % 4] : keep(rng));
  }
  return in;
}

struct Lists {
  std::vector<int32_t> indptr, indices;
};

Lists RunCpuTopK(const TopKCase& c, const TopKInputs& in) {
  Lists out;
  out.indptr.assign(c.num_seqs + 1, -1);
  out.indices.assign(static_cast<size_t>(c.num_seqs) * c.num_groups, -1);
  std::vector<int32_t> keep = in.keep;
  if (c.keep_all_groups) keep.assign(c.num_seqs, c.num_groups);
  cpu::HeadSelectParams p;
  p.scores = in.scores.data();
  p.score_rows = in.score_rows.data();
  p.keep = keep.data();
  p.num_seqs = c.num_seqs;
  p.num_heads = c.num_heads;
  p.num_groups = c.num_groups;
  p.reduce = static_cast<cpu::GroupScoreReduce>(c.reduce);
  p.indptr = out.indptr.data();
  p.indices = out.indices.data();
  cpu::SelectHeadGroups(p);
  out.indices.resize(out.indptr[c.num_seqs]);
  return out;
}

Lists RunGpuTopK(const TopKCase& c, const TopKInputs& in) {
  DeviceBuffer scores = DeviceBuffer::From(in.scores), rows = DeviceBuffer::From(in.score_rows),
               keep = DeviceBuffer::From(in.keep);
  DeviceBuffer indptr(sizeof(int32_t) * (c.num_seqs + 1)),
      indices(sizeof(int32_t) * std::max(1, c.num_seqs * c.num_groups));
  EXPECT_EQ(cudaMemset(indptr.get(), 0xff, sizeof(int32_t) * (c.num_seqs + 1)), cudaSuccess);
  EXPECT_EQ(cudaMemset(indices.get(), 0xff, sizeof(int32_t) * std::max(1, c.num_seqs * c.num_groups)),
            cudaSuccess);
  // Dense mode reads neither scores nor rows: give it rows that would fault.
  DeviceBuffer bad_rows = DeviceBuffer::From(std::vector<int32_t>(c.num_seqs, 1 << 30));
  HeadGroupTopKParams p;
  p.scores = scores.as<float>();
  if (c.keep_all_groups) {
    p.score_rows = bad_rows.as<int32_t>();
    p.keep_all_groups = true;
  } else {
    p.score_rows = rows.as<int32_t>();
    p.keep = keep.as<int32_t>();
  }
  p.num_seqs = c.num_seqs;
  p.num_heads = c.num_heads;
  p.num_groups = c.num_groups;
  p.reduce = c.reduce;
  p.indptr = indptr.as<int32_t>();
  p.indices = indices.as<int32_t>();
  EXPECT_EQ(SelectHeadGroupsTopK(p, nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  Lists out;
  out.indptr = indptr.To<int32_t>(c.num_seqs + 1);
  const int total = out.indptr[c.num_seqs];
  EXPECT_GE(total, 0);
  EXPECT_LE(total, c.num_seqs * c.num_groups);
  out.indices = indices.To<int32_t>(std::clamp(total, 0, c.num_seqs * c.num_groups));
  return out;
}

std::string Describe(const TopKCase& c) {
  return "seqs=" + std::to_string(c.num_seqs) + " heads=" + std::to_string(c.num_heads) +
         " groups=" + std::to_string(c.num_groups) + (c.reduce == GroupReduce::kMax ? " max" : " mean") +
         (c.keep_all_groups ? " all-groups" : "");
}

void CheckTopK(const TopKCase& c, uint32_t seed) {
  SCOPED_TRACE(Describe(c));
  const TopKInputs in = MakeTopKInputs(c, seed);
  const Lists want = RunCpuTopK(c, in);
  const Lists got = RunGpuTopK(c, in);
  EXPECT_EQ(got.indptr, want.indptr);
  EXPECT_EQ(got.indices, want.indices);
}

TEST(RouterTopKGpuTest, MatchesCpuBitForBit) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 1;
  // OPT-66B (72 heads), LLaMA-3-8B (32 query heads / 8 groups), MHA 32,
  // SmolLM2 (9 / 3), one group, more groups than a warp has lanes.
  const std::pair<int, int> shapes[] = {{72, 72}, {32, 8}, {32, 32}, {9, 3}, {16, 1}, {128, 128}, {80, 40}};
  for (auto [heads, groups] : shapes) {
    for (GroupReduce reduce : {GroupReduce::kMax, GroupReduce::kMean}) {
      for (int seqs : {1, 5, 64, 128, 1000}) {
        CheckTopK({seqs, heads, groups, reduce}, seed++);
      }
    }
  }
}

TEST(RouterTopKGpuTest, AllGroupsModeIgnoresScores) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (auto [heads, groups] : {std::pair{72, 72}, {32, 8}}) {
    for (int seqs : {1, 64, 129}) {
      TopKCase c{seqs, heads, groups, GroupReduce::kMax, /*keep_all_groups=*/true};
      CheckTopK(c, seed++);
    }
  }
}

TEST(RouterTopKGpuTest, LargestGroupCountAndNoSequences) {
  SKIP_WITHOUT_GPU();
  CheckTopK({7, 2048, 2048, GroupReduce::kMean}, 200);
  CheckTopK({3, 4096, 2048, GroupReduce::kMax}, 201);
  // No sequences: indptr = {0}.
  TopKCase c{0, 32, 8};
  const Lists got = RunGpuTopK(c, MakeTopKInputs(c, 202));
  EXPECT_EQ(got.indptr, std::vector<int32_t>{0});
}

TEST(RouterTopKGpuTest, RejectsInconsistentShapes) {
  SKIP_WITHOUT_GPU();
  DeviceBuffer buffer(4096);
  HeadGroupTopKParams p;
  p.scores = buffer.as<float>();
  p.score_rows = buffer.as<int32_t>();
  p.keep = buffer.as<int32_t>();
  p.indptr = buffer.as<int32_t>();
  p.indices = buffer.as<int32_t>();
  p.num_seqs = 2;
  p.num_heads = 30;
  p.num_groups = 8;  // does not divide 30
  EXPECT_EQ(SelectHeadGroupsTopK(p, nullptr), cudaErrorInvalidValue);
  p.num_heads = 4096;
  p.num_groups = 4096;  // more than 2048
  EXPECT_EQ(SelectHeadGroupsTopK(p, nullptr), cudaErrorInvalidValue);
  p.num_heads = 32;
  p.num_groups = 8;
  p.keep = nullptr;  // neither keep nor keep_all_groups
  EXPECT_EQ(SelectHeadGroupsTopK(p, nullptr), cudaErrorInvalidValue);
}

// ---------------------------------------------------------------------------
// Scores GEMM
// ---------------------------------------------------------------------------

struct ScoreInputs {
  std::vector<uint16_t> x, w;  // device bits
  std::vector<float> x_f, w_f, bias;
};

ScoreInputs MakeScoreInputs(RouterDtype dtype, int rows, int hidden, int heads, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ScoreInputs in;
  auto fill = [&](std::vector<uint16_t>& bits, std::vector<float>& f, size_t n, float scale) {
    bits.resize(n);
    f.resize(n);
    for (size_t i = 0; i < n; ++i) {
      bits[i] = ToBits(normal(rng) * scale, dtype);
      f[i] = FromBits(bits[i], dtype);
    }
  };
  fill(in.x, in.x_f, static_cast<size_t>(rows) * hidden, 1.0f);
  fill(in.w, in.w_f, static_cast<size_t>(heads) * hidden, 1.0f / std::sqrt(static_cast<float>(hidden)));
  in.bias.resize(heads);
  for (float& b : in.bias) b = normal(rng);
  return in;
}

// scores[r, h] in double from the same 16-bit inputs, and the scale of the
// terms (for the tolerance).
void ReferenceScores(const ScoreInputs& in, int rows, int hidden, int heads, bool bias, std::vector<double>* want,
                     std::vector<double>* magnitude) {
  want->assign(static_cast<size_t>(rows) * heads, 0.0);
  magnitude->assign(want->size(), 0.0);
  for (int r = 0; r < rows; ++r) {
    for (int h = 0; h < heads; ++h) {
      double sum = bias ? in.bias[h] : 0.0, mag = bias ? std::fabs(in.bias[h]) : 0.0;
      for (int c = 0; c < hidden; ++c) {
        const double term = double(in.x_f[static_cast<size_t>(r) * hidden + c]) * in.w_f[static_cast<size_t>(h) * hidden + c];
        sum += term;
        mag += std::fabs(term);
      }
      (*want)[static_cast<size_t>(r) * heads + h] = sum;
      (*magnitude)[static_cast<size_t>(r) * heads + h] = mag;
    }
  }
}

struct ScoreCase {
  RouterDtype dtype;
  int hidden, heads;
};

TEST(RouterScoresGpuTest, MatchesFp32Reference) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 300;
  // OPT-66B (9216, 72), LLaMA-3-8B (4096, 32), SmolLM2-135M (576, 9), a tiny odd one.
  const ScoreCase cases[] = {{RouterDtype::kFp16, 9216, 72}, {RouterDtype::kBf16, 9216, 72},
                             {RouterDtype::kFp16, 4096, 32}, {RouterDtype::kBf16, 4096, 32},
                             {RouterDtype::kFp16, 576, 9},   {RouterDtype::kBf16, 72, 3}};
  for (const ScoreCase& c : cases) {
    RouterScoresPlan* plan = nullptr;
    ASSERT_EQ(CreateRouterScoresPlan({c.dtype, c.hidden, c.heads}, &plan), cudaSuccess);
    for (int rows : {1, 3, 64, 128}) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE(std::string(DtypeName(c.dtype)) + " hidden=" +
                     std::to_string(c.hidden) + " heads=" + std::to_string(c.heads) + " rows=" + std::to_string(rows) +
                     (bias ? " bias" : " no bias"));
        const ScoreInputs in = MakeScoreInputs(c.dtype, rows, c.hidden, c.heads, seed++);
        DeviceBuffer x = DeviceBuffer::From(in.x), w = DeviceBuffer::From(in.w), b = DeviceBuffer::From(in.bias);
        DeviceBuffer scores(sizeof(float) * rows * c.heads);
        ASSERT_EQ(cudaMemset(scores.get(), 0xff, sizeof(float) * rows * c.heads), cudaSuccess);  // NaN poison
        ASSERT_EQ(RouterScores(plan, x.get(), w.get(), bias ? b.as<float>() : nullptr, scores.as<float>(), rows,
                               nullptr),
                  cudaSuccess);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const std::vector<float> got = scores.To<float>(static_cast<size_t>(rows) * c.heads);
        std::vector<double> want, magnitude;
        ReferenceScores(in, rows, c.hidden, c.heads, bias, &want, &magnitude);
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_TRUE(std::isfinite(got[i])) << "score " << i << " unwritten";
          // fp32 accumulation of exact products: error far below 1e-4 of the
          // terms' magnitude.
          ASSERT_NEAR(got[i], want[i], 1e-4 * magnitude[i] + 1e-6) << "score " << i;
        }
      }
    }
    DestroyRouterScoresPlan(plan);
  }
}

// Scores then top-k, both on the GPU, captured in a CUDA graph (the first
// call for its row count happens during capture) and replayed: the lists
// equal SelectHeadGroups on the GPU's own scores.
TEST(RouterScoresGpuTest, ScoresThenTopKInAGraph) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 400;
  for (auto [dtype, hidden, heads, groups] : {std::tuple{RouterDtype::kFp16, 9216, 72, 72},
                                              {RouterDtype::kBf16, 4096, 32, 8}}) {
    const int seqs = 96;
    SCOPED_TRACE("heads=" + std::to_string(heads) + " groups=" + std::to_string(groups));
    const ScoreInputs in = MakeScoreInputs(dtype, seqs, hidden, heads, seed++);
    DeviceBuffer x = DeviceBuffer::From(in.x), w = DeviceBuffer::From(in.w), b = DeviceBuffer::From(in.bias);
    DeviceBuffer scores(sizeof(float) * seqs * heads);
    TopKCase c{seqs, heads, groups, GroupReduce::kMax};
    TopKInputs topk = MakeTopKInputs(c, seed++);
    std::iota(topk.score_rows.begin(), topk.score_rows.end(), 0);  // decode: row s scores sequence s
    DeviceBuffer rows = DeviceBuffer::From(topk.score_rows), keep = DeviceBuffer::From(topk.keep);
    DeviceBuffer indptr(sizeof(int32_t) * (seqs + 1)), indices(sizeof(int32_t) * seqs * groups);

    RouterScoresPlan* plan = nullptr;
    ASSERT_EQ(CreateRouterScoresPlan({dtype, hidden, heads}, &plan), cudaSuccess);
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    HeadGroupTopKParams p;
    p.scores = scores.as<float>();
    p.score_rows = rows.as<int32_t>();
    p.keep = keep.as<int32_t>();
    p.num_seqs = seqs;
    p.num_heads = heads;
    p.num_groups = groups;
    p.indptr = indptr.as<int32_t>();
    p.indices = indices.as<int32_t>();
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    EXPECT_EQ(RouterScores(plan, x.get(), w.get(), b.as<float>(), scores.as<float>(), seqs, stream), cudaSuccess);
    EXPECT_EQ(SelectHeadGroupsTopK(p, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int replay = 0; replay < 2; ++replay) {
      ASSERT_EQ(cudaMemsetAsync(scores.get(), 0xff, sizeof(float) * seqs * heads, stream), cudaSuccess);
      ASSERT_EQ(cudaMemsetAsync(indptr.get(), 0xff, sizeof(int32_t) * (seqs + 1), stream), cudaSuccess);
      ASSERT_EQ(cudaMemsetAsync(indices.get(), 0xff, sizeof(int32_t) * seqs * groups, stream), cudaSuccess);
      ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      topk.scores = scores.To<float>(static_cast<size_t>(seqs) * heads);
      for (float s : topk.scores) ASSERT_TRUE(std::isfinite(s));
      const Lists want = RunCpuTopK(c, topk);
      Lists got;
      got.indptr = indptr.To<int32_t>(seqs + 1);
      ASSERT_EQ(got.indptr, want.indptr);
      got.indices = indices.To<int32_t>(got.indptr[seqs]);
      EXPECT_EQ(got.indices, want.indices);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
    DestroyRouterScoresPlan(plan);
  }
}

}  // namespace
}  // namespace polar::kernels::cuda
