// The polar CLI as a user runs it: real processes, real model files. Checks
// generate (greedy is deterministic and streams only the completion), tokenize
// (JSON array that round-trips through the tokenizer), model info, model synth
// (the written model loads and generates), and clear errors with a non-zero
// exit for bad input.
#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace {

struct Result {
  int exit_code;
  std::string output;  // stdout and stderr together
};

Result RunPolar(const std::string& args) {
  const std::string command = absl::StrCat(POLAR_BIN_DIR, "/polar ", args, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WEXITSTATUS(status), output};
}

std::string DefaultModel() { return POLAR_DEFAULT_MODEL; }

class CliDefaultModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(DefaultModel())) {
      GTEST_SKIP() << "default model not fetched (scripts/fetch-model): " << DefaultModel();
    }
  }
};

TEST_F(CliDefaultModelTest, GreedyGenerateIsDeterministicAndAnswers) {
  const std::string args = absl::StrCat("generate --model ", DefaultModel(),
                                        " --chat --temperature 0 --max-tokens 24 'What is the capital of France?'");
  Result a = RunPolar(args);
  Result b = RunPolar(args);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(a.output, b.output);
  EXPECT_NE(a.output.find("Paris"), std::string::npos) << a.output;
  EXPECT_EQ(a.output.find("capital of France?"), std::string::npos) << "the prompt is not echoed";
}

TEST_F(CliDefaultModelTest, SeededSamplingIsReproducible) {
  const std::string base = absl::StrCat("generate --model ", DefaultModel(),
                                        " --temperature 0.9 --top-p 0.95 --max-tokens 16 --seed ");
  Result a = RunPolar(base + "7 'The weather today'");
  Result b = RunPolar(base + "7 'The weather today'");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(a.output, b.output);
  EXPECT_GT(a.output.size(), 10u);
}

TEST_F(CliDefaultModelTest, TokenizePrintsJsonIds) {
  Result r = RunPolar(absl::StrCat("tokenize --model ", DefaultModel(), " --no-bos 'Hello world'"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(r.output.front(), '[') << r.output;
  std::string inner = r.output.substr(1, r.output.find(']') - 1);
  std::vector<std::string> ids = absl::StrSplit(inner, ',');
  EXPECT_EQ(ids.size(), 2u) << r.output;  // "Hello", " world"
}

TEST_F(CliDefaultModelTest, ModelInfoDescribesTheModel) {
  Result r = RunPolar(absl::StrCat("model info ", DefaultModel()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* expected : {"layers:              30", "hidden size:         576", "9 query, 3 key/value",
                               "Q4_1", "Q8_0"}) {
    EXPECT_NE(r.output.find(expected), std::string::npos) << expected << "\n" << r.output;
  }
}

TEST(CliTest, SynthWritesALoadableModel) {
  const std::string dir = ::testing::TempDir() + "/polar-synth-tiny-opt";
  std::filesystem::remove_all(dir);
  Result w = RunPolar(absl::StrCat("model synth --preset tiny-opt --seed 3 --out ", dir));
  ASSERT_EQ(w.exit_code, 0) << w.output;
  Result info = RunPolar(absl::StrCat("model info ", dir));
  ASSERT_EQ(info.exit_code, 0) << info.output;
  EXPECT_NE(info.output.find("opt"), std::string::npos);
  // A synthetic model has no tokenizer: logits work on ids.
  const std::string tokens = dir + "/tokens.json", out = dir + "/logits.f32";
  FILE* f = fopen(tokens.c_str(), "w");
  fputs("[5, 9, 11, 2]", f);
  fclose(f);
  Result l = RunPolar(absl::StrCat("logits --model ", dir, " --tokens ", tokens, " --out ", out));
  ASSERT_EQ(l.exit_code, 0) << l.output;
  EXPECT_GT(std::filesystem::file_size(out), 4u * 4u * 100u);
}

TEST(CliTest, ErrorsAreClearAndNonZero) {
  Result missing = RunPolar("generate --model /nonexistent/model.gguf hello");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("/nonexistent/model.gguf"), std::string::npos) << missing.output;
  Result unknown = RunPolar("generate --modle x hello");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.output.find("unknown option --modle"), std::string::npos) << unknown.output;
  Result preset = RunPolar("model synth --preset no-such-model --out /tmp/x");
  EXPECT_NE(preset.exit_code, 0);
  EXPECT_NE(preset.output.find("no-such-model"), std::string::npos) << preset.output;
  Result command = RunPolar("frobnicate");
  EXPECT_EQ(command.exit_code, 2);
}

TEST_F(CliDefaultModelTest, BadSamplingParametersAreRejected) {
  Result r = RunPolar(absl::StrCat("generate --model ", DefaultModel(), " --top-p 1.5 hello"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("top_p"), std::string::npos) << r.output;
}

}  // namespace
