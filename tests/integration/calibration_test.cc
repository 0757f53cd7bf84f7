// polar calibrate's pipeline (engine/runtime/calibration.h) on a small
// synthetic GQA model: it runs end to end, writes routers the engine loads,
// its choices are consistent with its report, and it is deterministic for a
// fixed seed (the same routers file, byte for byte).
#include "engine/runtime/calibration.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/integration/runner_test_util.h"

namespace polar {
namespace {

std::unique_ptr<ModelRunner> Open(const std::string& routers = "") {
  RunnerOptions options;
  options.num_kv_blocks = 512;
  options.head_routers = routers;
  return testing::OpenRunner("synth:tiny-llama3", options);
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(CalibrationTest, RunsEndToEndAndIsDeterministicForASeed) {
  std::unique_ptr<ModelRunner> runner = Open();
  ASSERT_NE(runner, nullptr);
  ASSERT_GE(runner->config().num_kv_heads, 2);
  // Text-like token stream: a random walk over a small vocabulary slice, so
  // attention patterns are not pure noise.
  std::mt19937 rng(3);
  std::vector<int32_t> tokens(30000);
  std::uniform_int_distribution<int32_t> step(-3, 3);
  int32_t t = 50;
  for (int32_t& x : tokens) x = t = std::clamp(t + step(rng), 0, static_cast<int32_t>(runner->config().vocab_size) - 1);
  CalibrationOptions options;
  options.samples_per_layer = 3000;
  options.training.max_epochs = 5;
  options.eval_windows = 4;
  options.importance_windows = 2;
  options.eval_window = 64;
  options.eval_prompt = 16;
  const std::string dir = std::filesystem::temp_directory_path().string();
  std::string bytes[2];
  for (int run = 0; run < 2; ++run) {
    std::unique_ptr<ModelRunner> fresh = Open();
    absl::StatusOr<CalibrationResult> result = Calibrate(*fresh, tokens, options);
    ASSERT_TRUE(result.ok()) << result.status();
    const nlohmann::json& report = result->report;
    EXPECT_EQ(report["samples_per_layer"].get<int64_t>(), 3000);
    EXPECT_TRUE(result->routers.dense[0]);
    const float d = result->routers.default_density;
    EXPECT_GT(d, 0.0f);
    EXPECT_LE(d, 1.0f);
    EXPECT_EQ(report["chosen"]["dense_layers"].size(),
              static_cast<size_t>(std::count(result->routers.dense.begin(), result->routers.dense.end(), true)));
    EXPECT_EQ(report["group_score"].get<std::string>(), GroupScoreName(result->routers.group_score));
    const std::string path = dir + "/polar_calibration_test_" + std::to_string(getpid()) + "_" + std::to_string(run);
    ASSERT_TRUE(result->routers.Save(path).ok());
    bytes[run] = ReadBytes(path);
    // The engine loads what calibration wrote.
    EXPECT_NE(Open(path), nullptr);
    std::filesystem::remove(path);
  }
  EXPECT_FALSE(bytes[0].empty());
  EXPECT_EQ(bytes[0], bytes[1]) << "calibration is not deterministic for a fixed seed";
}

TEST(CalibrationTest, RefusesTooLittleText) {
  std::unique_ptr<ModelRunner> runner = Open();
  ASSERT_NE(runner, nullptr);
  std::vector<int32_t> tokens(500, 7);
  EXPECT_EQ(Calibrate(*runner, tokens, CalibrationOptions()).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace polar
