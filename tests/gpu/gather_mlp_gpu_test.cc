// The gather-GEMM pair of the sparse MLP (kernels/cuda/gather_mlp) against the
// CPU reference (kernels/cpu/gather_mlp) on the same fp16/bf16-rounded
// inputs: OPT-6.7B's MLP (hidden 4096, ffn 16384) at batch 1/16/64 with k =
// 0, 1, 1664 (about 0.1), 8192 and all 16384 neurons, odd shapes (batches
// that are no power of two, hidden not a multiple of the 128-wide tiles,
// k not a multiple of 64), both dtypes, with and without biases, y
// overwritten or accumulated. fc1 is checked on its own; fc2 on the GPU's h
// (so only its own rounding counts) and end to end on the CPU's fp32 h;
// sparse against the dense kernels with the unselected neurons masked;
// forced reduction splits agree and repeat bit for bit; a CUDA graph replay
// equals the direct launch. Outputs are poisoned (NaN) before each launch,
// and one zeroed workspace serves all launches of a test (the split counters
// reset themselves). Skips itself where no CUDA device exists.
#include "kernels/cuda/gather_mlp.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/gather_mlp.h"
#include "kernels/cpu/half.h"
#include "tests/gpu/gpu_test_util.h"

namespace polar::kernels::cuda {
namespace {

// A tensor rounded to the 16-bit type: the bits the GPU reads and the same
// values as floats for the CPU.
struct Tensor {
  std::vector<uint16_t> bits;
  std::vector<float> f;
  DeviceBuffer device;
};

// Unit-variance uniform noise times scale from a counter hash (fast enough
// for OPT-6.7B's 134 M weights).
Tensor RandomTensor(size_t n, float scale, MlpDtype dtype, uint64_t seed) {
  Tensor t;
  t.bits.resize(n);
  t.f.resize(n);
  for (size_t i = 0; i < n; ++i) {
    uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ (seed * 0xD1B54A32D192ED03ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = (static_cast<float>(z >> 40) + 0.5f) * (2.0f / 16777216.0f) - 1.0f;  // (-1, 1), never 0
    t.bits[i] = ToBits(u * 1.7320508f * scale, dtype);
    t.f[i] = FromBits(t.bits[i], dtype);
  }
  t.device = DeviceBuffer::From(t.bits);
  return t;
}

// One MLP's weights, on both sides.
struct Mlp {
  MlpDtype dtype;
  int hidden, ffn;
  Tensor w1, b1, w2t, b2;
};

std::unique_ptr<Mlp> MakeMlp(MlpDtype dtype, int hidden, int ffn, uint64_t seed) {
  auto m = std::make_unique<Mlp>();
  m->dtype = dtype;
  m->hidden = hidden;
  m->ffn = ffn;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hidden));
  m->w1 = RandomTensor(static_cast<size_t>(ffn) * hidden, scale, dtype, seed);
  m->b1 = RandomTensor(ffn, 0.5f, dtype, seed + 1);
  m->w2t = RandomTensor(static_cast<size_t>(ffn) * hidden, scale, dtype, seed + 2);
  m->b2 = RandomTensor(hidden, 0.5f, dtype, seed + 3);
  return m;
}

// k distinct neurons, ascending (as SelectMlpNeurons writes them).
std::vector<int32_t> RandomSelection(int ffn, int k, uint32_t seed) {
  std::vector<int32_t> all(ffn);
  std::iota(all.begin(), all.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(k);
  std::sort(all.begin(), all.end());
  return all;
}

// Workspace shared by a test's launches: zeroed once, grown (and zeroed) when
// a launch needs more.
class Workspace {
 public:
  void* For(const GatherMlpParams& p, size_t* bytes) {
    size_t need = 0;
    EXPECT_EQ(GatherMlpWorkspaceBytes(p, &need), cudaSuccess);
    if (need > buffer_.bytes()) {
      buffer_ = DeviceBuffer(need);
      EXPECT_EQ(cudaMemset(buffer_.get(), 0, need), cudaSuccess);
    }
    *bytes = buffer_.bytes();
    return buffer_.get();
  }

 private:
  DeviceBuffer buffer_;
};

struct MlpRun {
  int rows = 1;
  const std::vector<int32_t>* indices = nullptr;  // nullptr: dense (all neurons)
  bool biases = true;
  bool accumulate = false;
  int fc1_splits = 0, fc2_splits = 0;
  int warp_layout = 0;  // GatherMlpParams::warp_layout
};

struct GpuResult {
  std::vector<float> h;  // [rows, h_stride]
  std::vector<float> y;  // [rows, hidden]
};

enum class Stage { kBoth, kFc1, kFc2 };

// Launches on the GPU. x: [rows, hidden]; y0: y's contents before (used when
// accumulating); h_in: fc2's input when only fc2 runs ([rows, h_stride] bits).
GpuResult RunGpu(const Mlp& m, const MlpRun& r, const Tensor& x, const Tensor& y0, Workspace& ws,
                 Stage stage = Stage::kBoth, const std::vector<uint16_t>* h_in = nullptr) {
  const int k = r.indices != nullptr ? static_cast<int>(r.indices->size()) : m.ffn;
  const int64_t h_stride = GatherMlpHStride(k);
  DeviceBuffer indices = r.indices != nullptr ? DeviceBuffer::From(*r.indices) : DeviceBuffer(4);
  DeviceBuffer h(sizeof(uint16_t) * r.rows * h_stride), y(sizeof(uint16_t) * r.rows * m.hidden);
  if (h_in != nullptr) {
    EXPECT_EQ(cudaMemcpy(h.get(), h_in->data(), h_in->size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  } else {
    EXPECT_EQ(cudaMemset(h.get(), 0xff, h.bytes()), cudaSuccess);  // NaN poison
  }
  if (r.accumulate) {
    EXPECT_EQ(cudaMemcpy(y.get(), y0.bits.data(), y.bytes(), cudaMemcpyHostToDevice), cudaSuccess);
  } else {
    EXPECT_EQ(cudaMemset(y.get(), 0xff, y.bytes()), cudaSuccess);
  }
  GatherMlpParams p;
  p.dtype = m.dtype;
  p.x = x.device.get();
  p.w1 = m.w1.device.get();
  p.b1 = r.biases ? m.b1.device.get() : nullptr;
  p.w2t = m.w2t.device.get();
  p.b2 = r.biases ? m.b2.device.get() : nullptr;
  p.indices = r.indices != nullptr ? static_cast<const int32_t*>(indices.get()) : nullptr;
  p.h = h.get();
  p.y = y.get();
  p.accumulate = r.accumulate;
  p.rows = r.rows;
  p.hidden = m.hidden;
  p.ffn = m.ffn;
  p.num_selected = k;
  p.fc1_splits = r.fc1_splits;
  p.fc2_splits = r.fc2_splits;
  p.warp_layout = r.warp_layout;
  size_t bytes = 0;
  void* workspace = ws.For(p, &bytes);
  if (stage == Stage::kBoth) EXPECT_EQ(GatherMlp(p, workspace, bytes, nullptr), cudaSuccess);
  if (stage == Stage::kFc1) EXPECT_EQ(GatherMlpFc1Relu(p, workspace, bytes, nullptr), cudaSuccess);
  if (stage == Stage::kFc2) EXPECT_EQ(GatherMlpFc2(p, workspace, bytes, nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  GpuResult out;
  for (uint16_t b : h.To<uint16_t>(static_cast<size_t>(r.rows) * h_stride)) out.h.push_back(FromBits(b, m.dtype));
  for (uint16_t b : y.To<uint16_t>(static_cast<size_t>(r.rows) * m.hidden)) out.y.push_back(FromBits(b, m.dtype));
  return out;
}

// The selected columns of h ([rows, stride] -> [rows, k]).
std::vector<float> Compact(const std::vector<float>& h, int rows, int64_t stride, int k) {
  std::vector<float> out(static_cast<size_t>(rows) * k);
  for (int r = 0; r < rows; ++r) std::copy_n(h.begin() + r * stride, k, out.begin() + static_cast<size_t>(r) * k);
  return out;
}

// Per-row relative L2 error, with a floor of 0.05 per element so that rows of
// (near) zeros, e.g. ReLU at k = 1, compare by absolute error. Fails on
// non-finite values. Returns the worst.
double CompareRows(const std::vector<float>& got, const std::vector<float>& want, int rows, int cols, double tol,
                   const std::string& what) {
  double worst = 0.0;
  for (int r = 0; r < rows; ++r) {
    double err = 0.0, norm = 0.0;
    for (int c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r) * cols + c;
      if (!std::isfinite(got[i])) {
        ADD_FAILURE() << what << ": row " << r << " col " << c << " not finite (unwritten?)";
        return INFINITY;
      }
      const double d = double(got[i]) - want[i];
      err += d * d;
      norm += double(want[i]) * want[i];
    }
    const double rel = std::sqrt(err) / std::max(std::sqrt(norm), 0.05 * std::sqrt(double(cols)));
    worst = std::max(worst, rel);
    if (rel > tol) {
      ADD_FAILURE() << what << ": row " << r << " relative error " << rel << " > " << tol;
      return rel;
    }
  }
  return worst;
}

// One rounding to the output type (h or y) on top of fp32 accumulation.
double Tolerance(MlpDtype dtype) { return dtype == MlpDtype::kFp16 ? 2e-3 : 1.2e-2; }
// End to end, h's rounding also propagates through fc2.
double EndToEndTolerance(MlpDtype dtype) { return dtype == MlpDtype::kFp16 ? 4e-3 : 2.5e-2; }

struct CpuResult {
  std::vector<float> h;       // [rows, k] fp32
  std::vector<float> y;       // [rows, hidden] from the fp32 h
};

std::vector<float> CpuFc2(const Mlp& m, const std::vector<float>& h, const std::vector<int32_t>& idx, int rows,
                          bool biases, bool accumulate, const Tensor& y0) {
  const int k = static_cast<int>(idx.size());
  std::vector<float> y(static_cast<size_t>(rows) * m.hidden);
  if (accumulate) std::copy_n(y0.f.begin(), y.size(), y.begin());
  const std::vector<float> zeros(m.hidden, 0.0f);
  cpu::GatherFc2(h.data(), m.w2t.f.data(), biases ? m.b2.f.data() : zeros.data(), idx.data(), rows, k, m.hidden,
                 y.data(), accumulate);
  return y;
}

CpuResult RunCpu(const Mlp& m, const std::vector<int32_t>& idx, int rows, bool biases, bool accumulate,
                 const Tensor& x, const Tensor& y0) {
  const int k = static_cast<int>(idx.size());
  CpuResult out;
  out.h.assign(static_cast<size_t>(rows) * k, NAN);
  const std::vector<float> zeros(m.ffn, 0.0f);
  cpu::GatherFc1Relu(x.f.data(), m.w1.f.data(), biases ? m.b1.f.data() : zeros.data(), idx.data(), rows, m.hidden,
                     k, out.h.data());
  out.y = CpuFc2(m, out.h, idx, rows, biases, accumulate, y0);
  return out;
}

std::vector<int32_t> AllNeurons(int ffn) {
  std::vector<int32_t> all(ffn);
  std::iota(all.begin(), all.end(), 0);
  return all;
}

// The pair against the CPU: fc1's h, fc2 on the GPU's h, and end to end.
// Returns the GPU result.
GpuResult CheckAgainstCpu(const Mlp& m, const MlpRun& r, const std::vector<int32_t>& idx, Workspace& ws, uint64_t seed) {
  const int k = static_cast<int>(idx.size());
  SCOPED_TRACE(std::string(DtypeName(m.dtype)) + " hidden=" + std::to_string(m.hidden) + " ffn=" + std::to_string(m.ffn) +
               " rows=" + std::to_string(r.rows) + " k=" + std::to_string(k) + (r.biases ? "" : " no biases") +
               (r.accumulate ? " accumulate" : "") + " splits=" + std::to_string(r.fc1_splits) + "/" +
               std::to_string(r.fc2_splits) + " warp layout " + std::to_string(r.warp_layout));
  const Tensor x = RandomTensor(static_cast<size_t>(r.rows) * m.hidden, 1.0f, m.dtype, seed);
  const Tensor y0 = RandomTensor(static_cast<size_t>(r.rows) * m.hidden, 1.0f, m.dtype, seed + 1);
  MlpRun run = r;
  run.indices = &idx;
  const GpuResult got = RunGpu(m, run, x, y0, ws);
  const CpuResult want = RunCpu(m, idx, r.rows, r.biases, r.accumulate, x, y0);
  const int64_t stride = GatherMlpHStride(k);
  const std::vector<float> h = Compact(got.h, r.rows, stride, k);
  CompareRows(h, want.h, r.rows, k, Tolerance(m.dtype), "fc1 h vs cpu");
  for (int row = 0; row < r.rows; ++row) {
    for (int64_t c = k; c < stride; ++c) {
      if (got.h[row * stride + c] != 0.0f) {
        ADD_FAILURE() << "h padding row " << row << " col " << c << " = " << got.h[row * stride + c] << ", want 0";
        break;
      }
    }
  }
  CompareRows(got.y, CpuFc2(m, h, idx, r.rows, r.biases, r.accumulate, y0), r.rows, m.hidden, Tolerance(m.dtype),
              "fc2 y vs cpu on the gpu's h");
  CompareRows(got.y, want.y, r.rows, m.hidden, EndToEndTolerance(m.dtype), "y vs cpu end to end");
  return got;
}

// Sparse against dense-with-mask, all on the GPU: the dense fc1 (no index
// list) restricted to the selection equals the sparse h; fc2 over the dense
// h with the unselected neurons zeroed equals the sparse y.
void CheckAgainstDenseWithMask(const Mlp& m, int rows, const std::vector<int32_t>& idx, Workspace& ws, uint64_t seed) {
  const int k = static_cast<int>(idx.size());
  SCOPED_TRACE(std::string(DtypeName(m.dtype)) + " dense-with-mask rows=" + std::to_string(rows) + " k=" + std::to_string(k));
  const Tensor x = RandomTensor(static_cast<size_t>(rows) * m.hidden, 1.0f, m.dtype, seed);
  const Tensor y0 = RandomTensor(static_cast<size_t>(rows) * m.hidden, 1.0f, m.dtype, seed + 1);
  MlpRun sparse{rows, &idx};
  const GpuResult s = RunGpu(m, sparse, x, y0, ws);
  MlpRun dense{rows, nullptr};
  const GpuResult d = RunGpu(m, dense, x, y0, ws, Stage::kFc1);
  const int64_t dense_stride = GatherMlpHStride(m.ffn);
  std::vector<float> d_selected(static_cast<size_t>(rows) * k);
  std::vector<uint16_t> masked(static_cast<size_t>(rows) * dense_stride, 0);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < k; ++i) {
      const float v = d.h[r * dense_stride + idx[i]];
      d_selected[static_cast<size_t>(r) * k + i] = v;
      masked[r * dense_stride + idx[i]] = ToBits(v, m.dtype);
    }
  }
  CompareRows(Compact(s.h, rows, GatherMlpHStride(k), k), d_selected, rows, k, Tolerance(m.dtype),
              "sparse h vs dense h");
  const GpuResult masked_y = RunGpu(m, dense, x, y0, ws, Stage::kFc2, &masked);
  CompareRows(s.y, masked_y.y, rows, m.hidden, EndToEndTolerance(m.dtype), "sparse y vs dense-with-mask y");
}

// Runs r again `repeats` times on the inputs CheckAgainstCpu drew from seed
// and expects the bits of `first` each time, whatever CTA arrived last.
void ExpectRepeatsBitForBit(const Mlp& m, MlpRun r, const std::vector<int32_t>& idx, Workspace& ws, uint64_t seed,
                            const GpuResult& first, int repeats) {
  const Tensor x = RandomTensor(static_cast<size_t>(r.rows) * m.hidden, 1.0f, m.dtype, seed);
  const Tensor y0 = RandomTensor(static_cast<size_t>(r.rows) * m.hidden, 1.0f, m.dtype, seed + 1);
  r.indices = &idx;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    const GpuResult again = RunGpu(m, r, x, y0, ws);
    EXPECT_EQ(0, std::memcmp(again.h.data(), first.h.data(), first.h.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(again.y.data(), first.y.data(), first.y.size() * sizeof(float)));
  }
}

constexpr MlpDtype kDtypes[] = {MlpDtype::kFp16, MlpDtype::kBf16};
constexpr int kOptHidden = 4096, kOptFfn = 16384;  // OPT-6.7B

TEST(GatherMlpGpuTest, Opt67bShapesMatchCpu) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 1;
  for (MlpDtype dtype : kDtypes) {
    const std::unique_ptr<Mlp> m = MakeMlp(dtype, kOptHidden, kOptFfn, 1000 + static_cast<int>(dtype));
    Workspace ws;
    for (int rows : {1, 16, 64}) {
      for (int k : {0, 1, 1664, 8192, kOptFfn}) {
        const std::vector<int32_t> idx = RandomSelection(kOptFfn, k, static_cast<uint32_t>(seed));
        MlpRun r{rows};
        r.accumulate = (rows + k) % 2 == 1;
        CheckAgainstCpu(*m, r, idx, ws, seed++);
      }
      CheckAgainstDenseWithMask(*m, rows, RandomSelection(kOptFfn, 1664, static_cast<uint32_t>(seed)), ws, seed++);
    }
  }
}

TEST(GatherMlpGpuTest, OddShapesMatchCpu) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (MlpDtype dtype : kDtypes) {
    // hidden 192: fc2's 128-wide tiles (batches above 16) reach past it.
    for (auto [hidden, ffn] : {std::pair{192, 1000}, {1024, 4096}}) {
      const std::unique_ptr<Mlp> m = MakeMlp(dtype, hidden, ffn, 2000 + seed);
      Workspace ws;
      for (int rows : {2, 3, 9, 17, 33, 40, 64}) {
        for (int k : {1, 7, 63, 65, 200, ffn}) {
          MlpRun r{rows};
          r.biases = k != 63;
          r.accumulate = k == 7 || k == 200;
          CheckAgainstCpu(*m, r, RandomSelection(ffn, k, static_cast<uint32_t>(seed)), ws, seed);
          ++seed;
        }
      }
      CheckAgainstDenseWithMask(*m, 33, RandomSelection(ffn, 300, static_cast<uint32_t>(seed)), ws, seed);
      ++seed;
    }
  }
}

TEST(GatherMlpGpuTest, ForcedSplitsAgreeAndRepeatBitForBit) {
  SKIP_WITHOUT_GPU();
  const std::unique_ptr<Mlp> m = MakeMlp(MlpDtype::kFp16, kOptHidden, kOptFfn, 3000);
  const std::vector<int32_t> idx = RandomSelection(kOptFfn, 1664, 3001);
  Workspace ws;
  uint64_t seed = 3002;
  for (int rows : {5, 64}) {
    for (auto [fc1, fc2] : {std::pair{1, 1}, {3, 5}, {64, 26}, {0, 0}}) {
      MlpRun r{rows};
      r.fc1_splits = fc1;
      r.fc2_splits = fc2;
      const GpuResult first = CheckAgainstCpu(*m, r, idx, ws, seed);
      ExpectRepeatsBitForBit(*m, r, idx, ws, seed, first, 3);
      ++seed;
    }
  }
}

// Every way of sharing a tile among a CTA's warps (1, 2 or 4 warps per
// output row, splitting the reduction steps) over every batch tile width,
// with forced splits too; the shared layouts repeat bit for bit.
TEST(GatherMlpGpuTest, EveryWarpLayoutMatchesCpu) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 3500;
  for (MlpDtype dtype : kDtypes) {
    for (auto [hidden, ffn] : {std::pair{1024, 4096}, {kOptHidden, kOptFfn}}) {
      const std::unique_ptr<Mlp> m = MakeMlp(dtype, hidden, ffn, 3400 + seed);
      Workspace ws;
      for (int layout : {1, 2, 4}) {
        for (int rows : {1, 9, 16, 30, 64}) {
          for (int k : {1, 65, ffn / 10, ffn}) {
            MlpRun r{rows};
            r.warp_layout = layout;
            r.accumulate = k == 65;
            r.fc1_splits = rows == 30 ? 3 : 0;
            r.fc2_splits = rows == 30 ? 7 : 0;
            const std::vector<int32_t> idx = RandomSelection(ffn, k, static_cast<uint32_t>(seed));
            const GpuResult first = CheckAgainstCpu(*m, r, idx, ws, seed);
            if (layout != 1 && rows == 64) ExpectRepeatsBitForBit(*m, r, idx, ws, seed, first, 1);
            ++seed;
          }
        }
      }
    }
  }
}

TEST(GatherMlpGpuTest, GraphReplayEqualsDirectLaunch) {
  SKIP_WITHOUT_GPU();
  const std::unique_ptr<Mlp> m = MakeMlp(MlpDtype::kBf16, kOptHidden, kOptFfn, 4000);
  const std::vector<int32_t> idx = RandomSelection(kOptFfn, 1664, 4001);
  const int rows = 64;
  const Tensor x = RandomTensor(static_cast<size_t>(rows) * kOptHidden, 1.0f, MlpDtype::kBf16, 4002);
  const Tensor y0 = RandomTensor(static_cast<size_t>(rows) * kOptHidden, 1.0f, MlpDtype::kBf16, 4003);
  Workspace ws;
  MlpRun r{rows, &idx};
  const GpuResult direct = RunGpu(*m, r, x, y0, ws);

  DeviceBuffer d_idx = DeviceBuffer::From(idx);
  const int64_t stride = GatherMlpHStride(1664);
  DeviceBuffer h(sizeof(uint16_t) * rows * stride), y(sizeof(uint16_t) * rows * kOptHidden);
  GatherMlpParams p;
  p.dtype = MlpDtype::kBf16;
  p.x = x.device.get();
  p.w1 = m->w1.device.get();
  p.b1 = m->b1.device.get();
  p.w2t = m->w2t.device.get();
  p.b2 = m->b2.device.get();
  p.indices = static_cast<const int32_t*>(d_idx.get());
  p.h = h.get();
  p.y = y.get();
  p.rows = rows;
  p.hidden = kOptHidden;
  p.ffn = kOptFfn;
  p.num_selected = 1664;
  size_t bytes = 0;
  void* workspace = ws.For(p, &bytes);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(GatherMlp(p, workspace, bytes, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 3; ++replay) {
    ASSERT_EQ(cudaMemsetAsync(h.get(), 0xff, h.bytes(), stream), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(y.get(), 0xff, y.bytes(), stream), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<float> got_h, got_y;
    for (uint16_t b : h.To<uint16_t>(static_cast<size_t>(rows) * stride)) got_h.push_back(cpu::Bf16ToFp32(b));
    for (uint16_t b : y.To<uint16_t>(static_cast<size_t>(rows) * kOptHidden)) got_y.push_back(cpu::Bf16ToFp32(b));
    EXPECT_EQ(0, std::memcmp(got_h.data(), direct.h.data(), got_h.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(got_y.data(), direct.y.data(), got_y.size() * sizeof(float)));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(GatherMlpGpuTest, RejectsUnsupportedShapesAndSmallWorkspace) {
  SKIP_WITHOUT_GPU();
  GatherMlpParams p;
  p.rows = 16;
  p.hidden = 256;
  p.ffn = 1024;
  p.num_selected = 100;
  size_t bytes = 0;
  ASSERT_EQ(GatherMlpWorkspaceBytes(p, &bytes), cudaSuccess);
  EXPECT_GT(bytes, 0u);
  GatherMlpParams bad = p;
  bad.rows = 65;
  EXPECT_EQ(GatherMlpWorkspaceBytes(bad, &bytes), cudaErrorInvalidValue);
  bad = p;
  bad.hidden = 100;  // not a multiple of 64
  EXPECT_EQ(GatherMlpWorkspaceBytes(bad, &bytes), cudaErrorInvalidValue);
  bad = p;
  bad.num_selected = 1025;
  EXPECT_EQ(GatherMlpWorkspaceBytes(bad, &bytes), cudaErrorInvalidValue);
  bad = p;
  bad.warp_layout = 3;
  EXPECT_EQ(GatherMlpWorkspaceBytes(bad, &bytes), cudaErrorInvalidValue);
  bad = p;
  bad.warp_layout = 2;  // warps sharing rows: 64-row tiles only
  bad.tile_rows = 128;
  EXPECT_EQ(GatherMlpWorkspaceBytes(bad, &bytes), cudaErrorInvalidValue);

  const std::unique_ptr<Mlp> m = MakeMlp(MlpDtype::kFp16, 256, 1024, 5000);
  const Tensor x = RandomTensor(16 * 256, 1.0f, MlpDtype::kFp16, 5001);
  DeviceBuffer idx = DeviceBuffer::From(RandomSelection(1024, 100, 5002));
  DeviceBuffer h(sizeof(uint16_t) * 16 * GatherMlpHStride(100)), y(sizeof(uint16_t) * 16 * 256);
  p.x = x.device.get();
  p.w1 = m->w1.device.get();
  p.w2t = m->w2t.device.get();
  p.h = h.get();
  p.y = y.get();
  ASSERT_EQ(GatherMlpWorkspaceBytes(p, &bytes), cudaSuccess);
  DeviceBuffer ws(bytes);
  ASSERT_EQ(cudaMemset(ws.get(), 0, bytes), cudaSuccess);
  // No index list means dense, which needs num_selected == ffn.
  EXPECT_EQ(GatherMlp(p, ws.get(), bytes, nullptr), cudaErrorInvalidValue);
  p.indices = static_cast<const int32_t*>(idx.get());
  EXPECT_EQ(GatherMlp(p, ws.get(), bytes - 1, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(GatherMlp(p, ws.get(), bytes, nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace polar::kernels::cuda
