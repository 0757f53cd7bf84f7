// Polar Sparsity's MLP neurons in the engine (ReLU models: OPT), on tiny OPTs
// (pre-LN from tests/data, post-LN with projections synthesised) with random
// MLP routers: the routers file round-trips and non-ReLU models refuse it;
// density-1 steps stay the dense engine bit for bit with routers loaded;
// k = ffn through the gather path equals the dense MLP bit for bit; the
// sparse MLP equals the dense one with the unselected neurons masked, bit
// for bit; the counters count neurons per token by batch bucket; router
// training learns a low-rank rule; calibration runs, is deterministic
// (whatever the thread count) and meets its recall target on its own
// held-out batches.
#include <omp.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <random>

#include "engine/model/mlp_router_training.h"
#include "engine/model/mlp_sparsity.h"
#include "engine/runtime/mlp_calibration.h"
#include "engine/runtime/model_runner.h"
#include "gtest/gtest.h"
#include "tests/integration/runner_test_util.h"

namespace polar {
namespace {

using testing::BitEqual;
using testing::DecodeLogits;
using testing::RandomSeqs;
using testing::Seq;

std::unique_ptr<ModelRunner> Open(const std::string& path, const std::string& mlp_routers = "", int threads = 0) {
  RunnerOptions options;
  options.mlp_routers = mlp_routers;
  options.num_kv_blocks = 256;
  options.threads = threads;
  return testing::OpenRunner(path, options);
}

// Random low-rank routers keeping `k` neurons in every bucket.
MlpRouters RandomRouters(const ModelConfig& config, uint32_t seed, int32_t k) {
  MlpRouters r = MlpRouters::ZerosFor(config, 16);
  std::mt19937 rng(seed);
  std::normal_distribution<float> w(0.0f, 1.0f);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    for (float& x : r.down[l]) x = w(rng);
    for (float& x : r.up[l]) x = w(rng);
    for (float& x : r.bias[l]) x = w(rng);
    for (int32_t& n : r.neurons[l]) n = k;
  }
  return r;
}

class MlpSparsityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dense_ = Open(GetParam());
    ASSERT_NE(dense_, nullptr);
    ffn_ = static_cast<int32_t>(dense_->config().intermediate_size);
    routers_path_ = testing::TempPath("polar_mlp_sparsity_",
                                      std::to_string(std::hash<std::string>{}(GetParam())) + ".safetensors");
    ASSERT_TRUE(RandomRouters(dense_->config(), 5, ffn_ / 4).Save(routers_path_).ok());
    sparse_ = Open(GetParam(), routers_path_);
    ASSERT_NE(sparse_, nullptr);
  }
  void TearDown() override { std::filesystem::remove(routers_path_); }

  // A runner with other routers (written to a file of its own).
  std::unique_ptr<ModelRunner> WithRouters(const MlpRouters& routers, const std::string& name) {
    const std::string path =
        testing::TempPath("polar_mlp_sparsity_", name + std::to_string(std::hash<std::string>{}(GetParam())));
    EXPECT_TRUE(routers.Save(path).ok());
    std::unique_ptr<ModelRunner> runner = Open(GetParam(), path);
    std::filesystem::remove(path);
    return runner;
  }

  std::unique_ptr<ModelRunner> dense_, sparse_;
  std::string routers_path_;
  int32_t ffn_ = 0;
};

TEST_P(MlpSparsityTest, RoutersFileRoundTripsAndOtherModelsRefuseIt) {
  const MlpRouters original = RandomRouters(dense_->config(), 5, ffn_ / 4);
  absl::StatusOr<MlpRouters> loaded = MlpRouters::Load(routers_path_, dense_->config());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rank, 16);
  EXPECT_EQ(loaded->bucket_max_batch, DefaultMlpBatchBuckets());
  EXPECT_EQ(loaded->down, original.down);
  EXPECT_EQ(loaded->up, original.up);
  EXPECT_EQ(loaded->bias, original.bias);
  EXPECT_EQ(loaded->neurons, original.neurons);
  ASSERT_NE(sparse_->mlp()->routers(), nullptr);
  EXPECT_EQ(dense_->mlp()->routers(), nullptr);
  // Another shape refuses them, naming the file.
  ModelConfig other = dense_->config();
  other.intermediate_size *= 2;
  absl::StatusOr<MlpRouters> refused = MlpRouters::Load(routers_path_, other);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(std::string(refused.status().message()).find(routers_path_), std::string::npos) << refused.status();
  // A SwiGLU model has no MLP sparsity: a clear FAILED_PRECONDITION.
  absl::StatusOr<Checkpoint> llama = OpenCheckpoint(std::string(POLAR_TEST_DATA_DIR) + "/models/tiny-llama");
  ASSERT_TRUE(llama.ok()) << llama.status();
  RunnerOptions options;
  options.mlp_routers = routers_path_;
  options.num_kv_blocks = 16;
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner = ModelRunner::Create(std::move(*llama), options);
  ASSERT_FALSE(runner.ok());
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(runner.status().message()).find("ReLU"), std::string::npos) << runner.status();
}

TEST_P(MlpSparsityTest, DensityOneStepsStayTheDenseEngineBitForBit) {
  // All dense; and a step holding one dense sequence among sparse ones (its
  // MLP is dense then, and without head routers so is its attention).
  for (const std::vector<float>& densities : {std::vector<float>{1.0f, 1.0f, 1.0f}, {0.5f, 1.0f, 0.25f}}) {
    const std::vector<Seq> seqs = RandomSeqs(dense_->config().vocab_size, densities, 1);
    const auto want = DecodeLogits(*dense_, seqs);
    const auto got = DecodeLogits(*sparse_, seqs);
    for (size_t i = 0; i < seqs.size(); ++i) EXPECT_TRUE(BitEqual(want[i], got[i])) << "sequence " << i;
  }
}

TEST_P(MlpSparsityTest, AllNeuronsThroughTheGatherPathEqualTheDenseMlpBitForBit) {
  std::unique_ptr<ModelRunner> all = WithRouters(RandomRouters(dense_->config(), 6, ffn_), "all");
  ASSERT_NE(all, nullptr);
  all->mlp()->SetDenseAbove(1.0f);  // gather even at k = ffn
  const std::vector<Seq> seqs = RandomSeqs(dense_->config().vocab_size, {0.5f, 0.5f, 0.5f}, 2);
  const auto want = DecodeLogits(*dense_, seqs);
  const auto got = DecodeLogits(*all, seqs);
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_TRUE(BitEqual(want[i], got[i])) << "sequence " << i;
}

TEST_P(MlpSparsityTest, SparseMlpEqualsDenseWithUnselectedNeuronsMaskedBitForBit) {
  std::unique_ptr<ModelRunner> masked = Open(GetParam(), routers_path_);
  ASSERT_NE(masked, nullptr);
  masked->mlp()->SetExecution(MlpExecution::kMasked);
  for (const std::vector<float>& densities : {std::vector<float>{0.5f}, {0.5f, 0.25f, 0.75f, 0.5f, 0.9f}}) {
    const std::vector<Seq> seqs = RandomSeqs(dense_->config().vocab_size, densities, 3);
    const auto gathered = DecodeLogits(*sparse_, seqs);
    const auto want = DecodeLogits(*masked, seqs);
    const auto dense = DecodeLogits(*dense_, seqs);
    for (size_t i = 0; i < seqs.size(); ++i) {
      EXPECT_TRUE(BitEqual(want[i], gathered[i])) << "sequence " << i;
      EXPECT_FALSE(BitEqual(dense[i], gathered[i])) << "sequence " << i << ": sparsity changed nothing";
    }
  }
}

TEST_P(MlpSparsityTest, CountersCountNeuronsPerTokenByBatchBucket) {
  const ModelConfig& c = dense_->config();
  MlpRouters routers = RandomRouters(c, 7, 8);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    routers.neurons[l] = {8, 16, 24, 32, 40, 48, 56};  // per bucket
  }
  routers.neurons[0][1] = ffn_;  // layer 0 at batches 2-4: above 0.8 * ffn, dense
  std::unique_ptr<ModelRunner> runner = WithRouters(routers, "buckets");
  ASSERT_NE(runner, nullptr);
  const MlpCounters& counters = runner->mlp()->counters();
  const std::vector<Seq> seqs = RandomSeqs(c.vocab_size, {0.5f, 0.5f, 0.5f}, 4);  // batch 3: bucket 2-4
  std::vector<int64_t> active(c.num_layers), total(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) active[l] = counters.active[l].load(), total[l] = counters.total[l].load();
  DecodeLogits(*runner, seqs);
  int64_t prompt_tokens = 0;
  for (const Seq& s : seqs) prompt_tokens += static_cast<int64_t>(s.prompt.size());
  const int64_t decode_tokens = 3 * static_cast<int64_t>(seqs[0].fed.size());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    EXPECT_EQ(counters.total[l].load() - total[l], (prompt_tokens + decode_tokens) * ffn_) << "layer " << l;
    const int64_t kept = l == 0 ? ffn_ : 16;  // prefill dense; decode at the bucket's k
    EXPECT_EQ(counters.active[l].load() - active[l], prompt_tokens * ffn_ + decode_tokens * kept) << "layer " << l;
  }
}

TEST_P(MlpSparsityTest, MlpRoutersAloneLetRequestsAskForSparsity) {
  EXPECT_EQ(dense_->ResolveDensity(0.5f).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sparse_->ResolveDensity(0.5f).value_or(-1), 0.5f);
  EXPECT_EQ(sparse_->ResolveDensity(0.0f).value_or(-1), 1.0f);  // no head routers: the default stays dense
}

INSTANTIATE_TEST_SUITE_P(Models, MlpSparsityTest,
                         ::testing::Values(std::string(POLAR_TEST_DATA_DIR) + "/models/tiny-opt",
                                           "synth:tiny-opt-proj"),
                         [](const auto& info) { return "model" + std::to_string(info.index); });

// Samples whose activity is a rank-4 linear rule of the input (plus noise):
// a low-rank router can learn it.
MlpRouterSamples LowRankSamples(int64_t n, int64_t d, int64_t f, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> a(4 * d), b(f * 4), c(f);
  for (float& v : a) v = normal(rng);
  for (float& v : b) v = normal(rng);
  for (float& v : c) v = normal(rng) - 1.0f;  // most neurons mostly idle, as in ReLU MLPs
  MlpRouterSamples s{n, d, f, std::vector<float>(n * d), std::vector<uint8_t>(n * f)};
  std::vector<double> u(4);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < d; ++k) s.inputs[i * d + k] = 3.0f * normal(rng) + 0.5f * static_cast<float>(k % 5);
    for (int64_t j = 0; j < 4; ++j) {
      u[j] = 0;
      for (int64_t k = 0; k < d; ++k) u[j] += a[j * d + k] * (s.inputs[i * d + k] - 0.5f * static_cast<float>(k % 5));
      u[j] /= 3.0 * std::sqrt(static_cast<double>(d));
    }
    for (int64_t j = 0; j < f; ++j) {
      double pre = c[j] + 0.1 * normal(rng);
      for (int64_t k = 0; k < 4; ++k) pre += b[j * 4 + k] * u[k];
      s.active[i * f + j] = pre > 0.0;
    }
  }
  return s;
}

TEST(MlpRouterTraining, LearnsALowRankRuleDeterministically) {
  const MlpRouterSamples s = LowRankSamples(3000, 32, 96, 1);
  MlpRouterTrainingOptions options;
  options.rank = 8;
  options.max_epochs = 8;
  options.learning_rate = 3e-3f;
  int epochs_seen = 0;
  options.on_epoch = [&](int, double loss, double) {
    EXPECT_TRUE(std::isfinite(loss));
    ++epochs_seen;
  };
  absl::StatusOr<TrainedMlpRouter> a = TrainMlpRouter(s, options);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(epochs_seen, a->epochs_run);
  EXPECT_EQ(a->validation_begin, 2700);
  EXPECT_GT(a->validation_recall, 0.85);
  // An untrained (zero) router ranks by neuron id only.
  TrainedMlpRouter zero{8, std::vector<float>(8 * 32), std::vector<float>(96 * 8), std::vector<float>(96)};
  UnionBatches batches{4, 32, 9, a->validation_begin, s.num_samples};
  const double trained_recall = UnionRecallAt(s, *a, 48, batches).value_or(-1);
  EXPECT_GT(trained_recall, UnionRecallAt(s, zero, 48, batches).value_or(2) + 0.2);
  // The curve and the serving kernel agree.
  absl::StatusOr<std::vector<double>> curve = UnionRecallByK(s, *a, batches);
  ASSERT_TRUE(curve.ok()) << curve.status();
  EXPECT_DOUBLE_EQ((*curve)[48], trained_recall);
  EXPECT_EQ(curve->back(), 1.0);
  options.on_epoch = nullptr;
  absl::StatusOr<TrainedMlpRouter> b = TrainMlpRouter(s, options);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->down, b->down);
  EXPECT_EQ(a->up, b->up);
  EXPECT_EQ(a->bias, b->bias);
  // Bad input is an error, not a crash.
  MlpRouterSamples bad = s;
  bad.active.pop_back();
  EXPECT_EQ(TrainMlpRouter(bad, options).status().code(), absl::StatusCode::kInvalidArgument);
  options.rank = 0;
  EXPECT_EQ(TrainMlpRouter(s, options).status().code(), absl::StatusCode::kInvalidArgument);
}

MlpCalibrationOptions SmallCalibration() {
  MlpCalibrationOptions o;
  o.label_window = 128;
  o.min_position = 8;
  o.samples_per_layer = 4000;
  o.training.max_epochs = 10;
  o.training.learning_rate = 3e-3f;
  o.recall_batches = 32;
  o.seed = 3;
  return o;
}

TEST(MlpCalibration, RunsIsDeterministicAndMeetsItsRecallOnHeldOutBatches) {
  const std::string model = std::string(POLAR_TEST_DATA_DIR) + "/models/tiny-opt";
  const int saved_threads = omp_get_max_threads();
  std::unique_ptr<ModelRunner> runner = Open(model, "", /*threads=*/3);
  ASSERT_NE(runner, nullptr);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(runner->config().vocab_size) - 1);
  std::vector<int32_t> corpus(40 * 128);
  for (int32_t& t : corpus) t = token(rng);
  const MlpCalibrationOptions options = SmallCalibration();

  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<MlpCalibrationResult> first = CalibrateMlp(*runner, corpus, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(first.ok()) << first.status();
  std::cout << "tiny-opt MLP calibration: " << seconds << " s; per layer (token recall) k/union recall by bucket:";
  for (const auto& layer : first->report["layers"]) {
    std::cout << "\n  layer " << layer["layer"] << " (" << layer["token_recall"] << "):";
    for (const auto& b : layer["buckets"]) std::cout << " " << b["k"] << "/" << b["union_recall"];
  }
  std::cout << std::endl;
  ASSERT_NE(runner->mlp()->routers(), nullptr);  // left loaded

  // Its own held-out batches, re-drawn and scored through the serving
  // selection kernel, meet the target at the chosen k.
  absl::StatusOr<std::vector<MlpRouterSamples>> samples = RecordMlpSamples(*runner, corpus, options);
  ASSERT_TRUE(samples.ok()) << samples.status();
  const MlpRouters& r = first->routers;
  const int64_t held_out = first->report["held_out_samples"].get<int64_t>();
  ASSERT_GT(held_out, 100);
  for (int64_t l = 0; l < r.num_layers; ++l) {
    const MlpRouterSamples& s = (*samples)[l];
    const TrainedMlpRouter router{r.rank, r.down[l], r.up[l], r.bias[l]};
    for (size_t b = 0; b < r.bucket_max_batch.size(); ++b) {
      const int64_t k = r.neurons[l][b];
      EXPECT_EQ(k % MlpNeuronStep(r.ffn_size) == 0 || k == r.ffn_size, true) << k;
      UnionBatches batches{r.bucket_max_batch[b], options.recall_batches, options.seed + 1000003 * b,
                           s.num_samples - held_out, s.num_samples};
      absl::StatusOr<double> recall = UnionRecallAt(s, router, k, batches);
      ASSERT_TRUE(recall.ok()) << recall.status();
      EXPECT_GE(*recall, options.target_recall) << "layer " << l << " bucket " << b << " k " << k;
      EXPECT_DOUBLE_EQ(*recall, first->report["layers"][l]["buckets"][b]["union_recall"].get<double>());
      // k is the smallest step meeting it.
      if (k > MlpNeuronStep(r.ffn_size)) {
        EXPECT_LT(UnionRecallAt(s, router, k - MlpNeuronStep(r.ffn_size), batches).value_or(2), options.target_recall);
      }
    }
    // Bigger batches never need fewer neurons (their union is larger).
    EXPECT_LE(r.neurons[l].front(), r.neurons[l].back()) << "layer " << l;
  }

  // Deterministic for the seed, with one thread as with three.
  std::unique_ptr<ModelRunner> single = Open(model, "", /*threads=*/1);
  ASSERT_NE(single, nullptr);
  absl::StatusOr<MlpCalibrationResult> second = CalibrateMlp(*single, corpus, options);
  omp_set_num_threads(saved_threads);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->routers.down, r.down);
  EXPECT_EQ(second->routers.up, r.up);
  EXPECT_EQ(second->routers.bias, r.bias);
  EXPECT_EQ(second->routers.neurons, r.neurons);
}

TEST(MlpCalibration, RefusesModelsWithoutAReluMlp) {
  std::unique_ptr<ModelRunner> llama = Open(std::string(POLAR_TEST_DATA_DIR) + "/models/tiny-llama");
  ASSERT_NE(llama, nullptr);
  std::vector<int32_t> corpus(2048, 1);
  absl::StatusOr<MlpCalibrationResult> r = CalibrateMlp(*llama, corpus, SmallCalibration());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(r.status().message()).find("ReLU"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace polar
