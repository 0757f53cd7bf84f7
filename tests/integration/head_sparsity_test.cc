// Polar Sparsity's attention heads in the engine, on synthetic models (GQA
// LLaMA and MHA OPT) with random routers: the routers file round-trips;
// density 1 equals the dense engine bit for bit; a sequence gets the same
// logits whatever it is batched with, at whatever densities its neighbours
// run; sparse decoding really changes the result; the per-layer counters
// count the heads computed; bad densities are clear errors.
#include <filesystem>
#include <random>

#include "engine/model/head_routers.h"
#include "engine/runtime/model_runner.h"
#include "engine/runtime/sparsity_eval.h"
#include "gtest/gtest.h"
#include "tests/integration/runner_test_util.h"

namespace polar {
namespace {

using testing::BitEqual;
using testing::DecodeLogits;
using testing::RandomSeqs;
using testing::Seq;

std::unique_ptr<ModelRunner> Open(const std::string& path, const std::string& routers = "") {
  RunnerOptions options;
  options.head_routers = routers;
  options.num_kv_blocks = 256;
  return testing::OpenRunner(path, options);
}

HeadRouters RandomRouters(const ModelConfig& config, uint32_t seed, float default_density) {
  HeadRouters r = HeadRouters::DenseFor(config);
  std::mt19937 rng(seed);
  std::normal_distribution<float> w(0.0f, 1.0f);
  for (int64_t l = 1; l < config.num_layers; ++l) {  // layer 0 stays dense
    r.dense[l] = false;
    r.weight[l].resize(config.num_heads * config.hidden_size);
    r.bias[l].resize(config.num_heads);
    for (float& x : r.weight[l]) x = w(rng);
    for (float& x : r.bias[l]) x = w(rng);
  }
  r.group_score = GroupScore::kMax;
  r.default_density = default_density;
  return r;
}

class HeadSparsityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dense_ = Open(GetParam());
    ASSERT_NE(dense_, nullptr);
    routers_path_ = testing::TempPath("polar_head_sparsity_",
                                      std::to_string(std::hash<std::string>{}(GetParam())) + ".safetensors");
    ASSERT_TRUE(RandomRouters(dense_->config(), 5, 0.5f).Save(routers_path_).ok());
    sparse_ = Open(GetParam(), routers_path_);
    ASSERT_NE(sparse_, nullptr);
  }
  void TearDown() override { std::filesystem::remove(routers_path_); }

  std::unique_ptr<ModelRunner> dense_, sparse_;
  std::string routers_path_;
};

TEST_P(HeadSparsityTest, RoutersFileRoundTrips) {
  const HeadRouters original = RandomRouters(dense_->config(), 5, 0.5f);
  absl::StatusOr<HeadRouters> loaded = HeadRouters::Load(routers_path_, dense_->config());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->dense, original.dense);
  EXPECT_EQ(loaded->weight, original.weight);
  EXPECT_EQ(loaded->bias, original.bias);
  EXPECT_EQ(loaded->default_density, 0.5f);
  EXPECT_EQ(loaded->group_score, GroupScore::kMax);
  EXPECT_EQ(sparse_->default_density(), 0.5f);
  // A model of another shape refuses them, naming the file.
  ModelConfig other = dense_->config();
  other.num_layers += 1;
  absl::StatusOr<HeadRouters> refused = HeadRouters::Load(routers_path_, other);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(std::string(refused.status().message()).find(routers_path_), std::string::npos) << refused.status();
}

TEST_P(HeadSparsityTest, DensityOneEqualsTheDenseEngineBitForBit) {
  const std::vector<Seq> seqs = RandomSeqs(dense_->config().vocab_size, {1.0f, 1.0f, 1.0f}, 1);
  const auto want = DecodeLogits(*dense_, seqs, {0, 1, 2});
  const auto got = DecodeLogits(*sparse_, seqs, {0, 1, 2});
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_TRUE(BitEqual(want[i], got[i])) << "sequence " << i;
}

TEST_P(HeadSparsityTest, MixedDensityBatchEqualsEachSequenceAlone) {
  const std::vector<Seq> seqs = RandomSeqs(dense_->config().vocab_size, {0.25f, 1.0f, 0.5f, 0.75f, 0.3f}, 2);
  const auto together = DecodeLogits(*sparse_, seqs, {0, 1, 2, 3, 4});
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto alone = DecodeLogits(*sparse_, seqs, {i});
    EXPECT_TRUE(BitEqual(together[i], alone[i])) << "sequence " << i << " density " << seqs[i].density;
  }
}

TEST_P(HeadSparsityTest, SparseDecodingChangesTheLogitsAndCountsHeads) {
  const ModelConfig& c = dense_->config();
  std::vector<Seq> seqs = RandomSeqs(c.vocab_size, {0.25f}, 3);
  const auto dense = DecodeLogits(*dense_, seqs, {0});
  const HeadCounters& counters = sparse_->heads().counters();
  const int64_t active_before = counters.active[1].load(), total_before = counters.total[1].load();
  const int64_t layer0_before = counters.active[0].load();
  const auto sparse = DecodeLogits(*sparse_, seqs, {0});
  EXPECT_FALSE(BitEqual(dense[0], sparse[0]));
  const int64_t tokens = static_cast<int64_t>(seqs[0].prompt.size() + seqs[0].fed.size());
  const int64_t decode_tokens = static_cast<int64_t>(seqs[0].fed.size());
  const int64_t kept_heads = GroupsToKeep(0.25f, c.num_kv_heads) * (c.num_heads / c.num_kv_heads);
  // Layer 1 is routed: the prompt's tokens are dense, each decode token keeps its groups.
  EXPECT_EQ(counters.total[1].load() - total_before, tokens * c.num_heads);
  EXPECT_EQ(counters.active[1].load() - active_before,
            static_cast<int64_t>(seqs[0].prompt.size()) * c.num_heads + decode_tokens * kept_heads);
  // Layer 0 is dense.
  EXPECT_EQ(counters.active[0].load() - layer0_before, tokens * c.num_heads);
}

TEST_P(HeadSparsityTest, OracleAndRandomSelectionsRunAndDensityOneStaysDense) {
  std::vector<Seq> seqs = RandomSeqs(dense_->config().vocab_size, {1.0f, 0.5f}, 4);
  const auto dense = DecodeLogits(*dense_, seqs, {0, 1});
  for (HeadSelectionMode mode : {HeadSelectionMode::kOracle, HeadSelectionMode::kRandom}) {
    sparse_->heads().SetMode(mode, 9);
    const auto got = DecodeLogits(*sparse_, seqs, {0, 1});
    EXPECT_TRUE(BitEqual(dense[0], got[0])) << static_cast<int>(mode);
    EXPECT_FALSE(BitEqual(dense[1], got[1])) << static_cast<int>(mode);
    // Deterministic for a fixed seed.
    EXPECT_TRUE(BitEqual(got[1], DecodeLogits(*sparse_, seqs, {0, 1})[1])) << static_cast<int>(mode);
  }
  sparse_->heads().SetMode(HeadSelectionMode::kRouters, 0);
}

TEST_P(HeadSparsityTest, BadDensitiesAreClearErrors) {
  EXPECT_EQ(dense_->ResolveDensity(0.5f).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(dense_->ResolveDensity(0.0f).value_or(-1), 1.0f);  // default without routers: dense
  EXPECT_EQ(sparse_->ResolveDensity(0.0f).value_or(-1), 0.5f);
  for (float bad : {-0.1f, 1.5f, std::nanf("")}) {
    EXPECT_EQ(sparse_->ResolveDensity(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  GenerationRequest request;
  request.prompt = {1, 2, 3};
  request.params.max_tokens = 2;
  request.density = 0.5f;
  absl::StatusOr<std::vector<GenerationResult>> refused = dense_->Generate(std::span(&request, 1), {});
  EXPECT_FALSE(refused.ok());
  absl::StatusOr<std::vector<GenerationResult>> served = sparse_->Generate(std::span(&request, 1), {});
  EXPECT_TRUE(served.ok()) << served.status();
}

TEST_P(HeadSparsityTest, EvaluationAtDensityOneAgreesExactlyAndSparseCostsSomething) {
  std::mt19937 rng(6);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(dense_->config().vocab_size) - 1);
  std::vector<int32_t> corpus(5 * 40 + 7);
  for (int32_t& t : corpus) t = token(rng);
  SparsityEvalOptions options;
  options.window = 40;
  options.prompt = 8;
  options.batch = 2;
  absl::StatusOr<SparsityEvalResult> same = EvaluateSparsity(*sparse_, corpus, options);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->windows, 5);
  EXPECT_EQ(same->scored_tokens, 5 * (40 - 1 - 8));
  EXPECT_EQ(same->perplexity, same->dense_perplexity);
  EXPECT_EQ(same->top1_agreement, 1.0);
  EXPECT_EQ(same->mean_kl, 0.0);
  EXPECT_EQ(same->density, 1.0);
  const ModelConfig& c = dense_->config();
  for (HeadSelectionMode mode : {HeadSelectionMode::kRouters, HeadSelectionMode::kOracle, HeadSelectionMode::kRandom}) {
    options.mode = mode;
    options.density = 0.25f;
    absl::StatusOr<SparsityEvalResult> sparse = EvaluateSparsity(*sparse_, corpus, options);
    ASSERT_TRUE(sparse.ok()) << sparse.status();
    EXPECT_GT(sparse->mean_kl, 0.0);
    EXPECT_EQ(sparse->dense_perplexity, same->dense_perplexity);
    EXPECT_EQ(sparse->layer_density[0], 1.0);  // layer 0 stays dense
    const double kept = static_cast<double>(GroupsToKeep(0.25f, c.num_kv_heads)) / static_cast<double>(c.num_kv_heads);
    EXPECT_DOUBLE_EQ(sparse->layer_density[1], kept);
  }
  EXPECT_EQ(sparse_->heads().routers()->default_density, 0.5f);  // the mode was restored, routers kept
}

INSTANTIATE_TEST_SUITE_P(Models, HeadSparsityTest,
                         ::testing::Values(std::string(POLAR_TEST_DATA_DIR) + "/models/tiny-llama",
                                           std::string(POLAR_TEST_DATA_DIR) + "/models/tiny-opt",
                                           "synth:tiny-llama3"),
                         [](const auto& info) { return "model" + std::to_string(info.index); });

}  // namespace
}  // namespace polar
