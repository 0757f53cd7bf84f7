// Helpers for tests that drive a ModelRunner directly: opening one, temporary
// file names, and the decode experiment the sparsity tests
// (head_sparsity_test.cc, mlp_sparsity_test.cc) compare runners with: random
// sequences, each prefilled and then fed fixed tokens one decode step at a
// time in a chosen batch, their logits compared bit for bit. Shared so that
// both tests batch and feed sequences exactly the same way.
#pragma once

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "engine/model/checkpoint.h"
#include "engine/runtime/model_runner.h"
#include "gtest/gtest.h"

namespace polar::testing {

// The checkpoint at `path` in a runner, or nullptr after a test failure.
inline std::unique_ptr<ModelRunner> OpenRunner(const std::string& path, const RunnerOptions& options) {
  absl::StatusOr<Checkpoint> ck = OpenCheckpoint(path);
  EXPECT_TRUE(ck.ok()) << ck.status();
  if (!ck.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner = ModelRunner::Create(std::move(*ck), options);
  EXPECT_TRUE(runner.ok()) << runner.status();
  return runner.ok() ? std::move(*runner) : nullptr;
}

// A file name in the temporary directory, unique to this process.
inline std::string TempPath(const std::string& prefix, const std::string& name) {
  return (std::filesystem::temp_directory_path() / (prefix + std::to_string(getpid()) + "_" + name)).string();
}

// One sequence of the decode experiment: its prompt, the tokens it is fed
// afterwards (teacher-forced, one per step) and its density.
struct Seq {
  std::vector<int32_t> prompt, fed;
  float density = 1.0f;
};

// One sequence per density, with prompts of different lengths.
inline std::vector<Seq> RandomSeqs(int64_t vocab, const std::vector<float>& densities, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab) - 1);
  std::vector<Seq> seqs;
  for (size_t i = 0; i < densities.size(); ++i) {
    Seq s;
    for (size_t t = 0; t < 5 + 7 * i; ++t) s.prompt.push_back(token(rng));
    for (int t = 0; t < 6; ++t) s.fed.push_back(token(rng));
    s.density = densities[i];
    seqs.push_back(s);
  }
  return seqs;
}

// Prefills every sequence in `group` together, then runs one decode step per
// fed token with them; returns per sequence its decode logits
// ([steps * vocab]; empty for those not in `group`).
inline std::vector<std::vector<float>> DecodeLogits(ModelRunner& runner, const std::vector<Seq>& seqs,
                                                    const std::vector<size_t>& group) {
  const int64_t vocab = runner.config().vocab_size;
  std::vector<std::vector<float>> out(seqs.size());
  std::vector<SequenceKv> kv;
  for (size_t i = 0; i < seqs.size(); ++i) kv.emplace_back(runner.kv_layout().block_size);
  std::vector<float> logits;
  runner.ClearStep();
  for (size_t i : group) EXPECT_TRUE(runner.AddToStep(kv[i], seqs[i].prompt, false, seqs[i].density).ok());
  EXPECT_TRUE(runner.RunStep(logits).ok());
  for (size_t t = 0; t < seqs[group[0]].fed.size(); ++t) {
    runner.ClearStep();
    for (size_t i : group) {
      EXPECT_TRUE(runner.AddToStep(kv[i], std::span(&seqs[i].fed[t], 1), true, seqs[i].density).ok());
    }
    EXPECT_TRUE(runner.RunStep(logits).ok());
    for (size_t j = 0; j < group.size(); ++j) {
      out[group[j]].insert(out[group[j]].end(), logits.begin() + j * vocab, logits.begin() + (j + 1) * vocab);
    }
  }
  for (SequenceKv& k : kv) k.Release(runner.kv_allocator());
  return out;
}

// The same with all the sequences in one batch, in order.
inline std::vector<std::vector<float>> DecodeLogits(ModelRunner& runner, const std::vector<Seq>& seqs) {
  std::vector<size_t> all(seqs.size());
  std::iota(all.begin(), all.end(), 0);
  return DecodeLogits(runner, seqs, all);
}

inline bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace polar::testing
