// The engine core end to end on real checkpoints (tiny committed models and,
// when fetched, the default model): batched generation of prompts of different
// lengths and sampling settings equals generating each alone; chunked prefill
// equals token-by-token decode; exhausting the KV cache or the context is a
// clean error, never a crash.
#include "engine/runtime/model_runner.h"

#include <cmath>
#include <filesystem>
#include <random>

#include "gtest/gtest.h"
#include "tests/integration/runner_test_util.h"

namespace polar {
namespace {

std::unique_ptr<ModelRunner> Open(const std::string& path, RunnerOptions options = {}) {
  return testing::OpenRunner(path, options);
}

std::vector<GenerationRequest> MixedRequests(int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab) - 1);
  std::vector<GenerationRequest> requests;
  const int prompt_lens[] = {1, 9, 40, 3, 70};
  for (int i = 0; i < 5; ++i) {
    GenerationRequest r;
    for (int t = 0; t < prompt_lens[i]; ++t) r.prompt.push_back(token(rng));
    r.params.max_tokens = 12 + 3 * i;
    r.params.ignore_eos = true;
    r.params.seed = 100 + i;
    r.params.temperature = i % 2 == 0 ? 0.0f : 0.8f;
    r.params.top_k = i == 3 ? 20 : 0;
    r.params.top_p = i == 1 ? 0.9f : 1.0f;
    r.params.repetition_penalty = i == 4 ? 1.3f : 1.0f;
    requests.push_back(r);
  }
  return requests;
}

void ExpectBatchEqualsAlone(const std::string& path) {
  RunnerOptions options;
  options.max_batch_tokens = 48;  // forces chunked prefill mixed with decode
  std::unique_ptr<ModelRunner> runner = Open(path, options);
  ASSERT_NE(runner, nullptr);
  const std::vector<GenerationRequest> requests = MixedRequests(runner->config().vocab_size, 5);
  absl::StatusOr<std::vector<GenerationResult>> batched = runner->Generate(requests, {});
  ASSERT_TRUE(batched.ok()) << batched.status();
  for (size_t i = 0; i < requests.size(); ++i) {
    absl::StatusOr<std::vector<GenerationResult>> alone = runner->Generate(std::span(&requests[i], 1), {});
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ((*batched)[i].tokens, (*alone)[0].tokens) << "request " << i;
    EXPECT_EQ((*batched)[i].tokens.size(), static_cast<size_t>(requests[i].params.max_tokens));
  }
}

TEST(ModelRunnerTest, BatchedGenerationEqualsAloneTinyModels) {
  for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-opt"}) {
    SCOPED_TRACE(name);
    ExpectBatchEqualsAlone(std::string(POLAR_TEST_DATA_DIR) + "/models/" + name);
  }
}

TEST(ModelRunnerTest, BatchedGenerationEqualsAloneDefaultModel) {
  if (!std::filesystem::exists(POLAR_DEFAULT_MODEL)) {
    GTEST_SKIP() << "default model not fetched (scripts/fetch-model): " << POLAR_DEFAULT_MODEL;
  }
  ExpectBatchEqualsAlone(POLAR_DEFAULT_MODEL);
}

TEST(ModelRunnerTest, ChunkedPrefillEqualsTokenByToken) {
  std::unique_ptr<ModelRunner> runner = Open(std::string(POLAR_TEST_DATA_DIR) + "/models/tiny-llama");
  ASSERT_NE(runner, nullptr);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 100; ++i) tokens.push_back((i * 37 + 11) % runner->config().vocab_size);
  absl::StatusOr<std::vector<float>> one = runner->ScoreTokens(tokens, 1);
  absl::StatusOr<std::vector<float>> many = runner->ScoreTokens(tokens, 33);
  ASSERT_TRUE(one.ok() && many.ok());
  double max_diff = 0;
  for (size_t i = 0; i < one->size(); ++i) max_diff = std::max(max_diff, double(std::abs((*one)[i] - (*many)[i])));
  EXPECT_LT(max_diff, 1e-4);
}

TEST(ModelRunnerTest, KvExhaustionAndBadInputAreErrors) {
  RunnerOptions options;
  options.num_kv_blocks = 2;
  options.block_size = 4;
  std::unique_ptr<ModelRunner> runner = Open(std::string(POLAR_TEST_DATA_DIR) + "/models/tiny-llama", options);
  ASSERT_NE(runner, nullptr);
  GenerationRequest r;
  r.prompt.assign(20, 3);
  r.params.ignore_eos = true;
  absl::StatusOr<std::vector<GenerationResult>> full = runner->Generate(std::span(&r, 1), {});
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  // The cache is whole again afterwards: a short request fits.
  r.prompt.assign(3, 3);
  r.params.max_tokens = 4;
  EXPECT_TRUE(runner->Generate(std::span(&r, 1), {}).ok());
  r.prompt = {static_cast<int32_t>(runner->config().vocab_size)};  // out of range
  EXPECT_EQ(runner->Generate(std::span(&r, 1), {}).status().code(), absl::StatusCode::kInvalidArgument);
  r.prompt.clear();
  EXPECT_EQ(runner->Generate(std::span(&r, 1), {}).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> too_long(runner->config().max_position_embeddings + 1, 1);
  EXPECT_FALSE(runner->ScoreTokens(too_long).ok());
}

}  // namespace
}  // namespace polar
