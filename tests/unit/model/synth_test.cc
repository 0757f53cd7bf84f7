// Tests of synthetic models: presets (published shapes of the big ones),
// determinism (seed, thread count), the weight distributions, dtype
// conversion, and writing Hugging Face directories (single file, sharded,
// quantized tensors converted). With POLAR_SYNTH_EXPORT_DIR set, the tiny
// presets are also written there for tests/reference/check_synth_hf_load.py,
// which loads them with transformers.
#include "engine/model/synth.h"

#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/model/safetensors_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/half.h"
#include "nlohmann/json.hpp"

namespace polar {
namespace {

using ::testing::HasSubstr;

const char* const kTinyPresets[] = {"tiny-llama", "tiny-llama3", "tiny-qwen2", "tiny-opt", "tiny-opt-proj"};

std::string TempDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/synth_test_" + std::to_string(::getpid()) + "_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::vector<uint8_t> Bytes(const HostTensor& t) { return std::vector<uint8_t>(t.data, t.data + t.nbytes); }

std::vector<float> F32(const HostTensor& t) {
  auto values = ToF32(t);
  EXPECT_TRUE(values.ok()) << values.status();
  return values.ok() ? *values : std::vector<float>{};
}

Checkpoint Synth(const std::string& preset, uint64_t seed, DType dtype) {
  auto config = SynthPresetConfig(preset);
  EXPECT_TRUE(config.ok()) << config.status();
  auto checkpoint = SynthesizeCheckpoint(*config, seed, dtype);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  return *std::move(checkpoint);
}

TEST(SynthPresetTest, NamesAndConfigs) {
  const std::vector<std::string> names = SynthPresetNames();
  for (const char* name : {"tiny-llama", "tiny-llama3", "tiny-qwen2", "tiny-opt", "tiny-opt-proj", "llama-2-7b",
                           "llama-3-8b", "llama-3.1-8b", "mistral-7b", "qwen2.5-7b", "opt-6.7b", "opt-66b"}) {
    EXPECT_THAT(names, ::testing::Contains(name));
  }
  for (const std::string& name : names) {
    auto config = SynthPresetConfig(name);
    ASSERT_TRUE(config.ok()) << name;
    EXPECT_TRUE(config->Validate().ok()) << name << ": " << config->Validate();
  }
  auto unknown = SynthPresetConfig("llama-9000");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("tiny-llama"));
}

TEST(SynthPresetTest, PublishedShapes) {
  const ModelConfig l31 = *SynthPresetConfig("llama-3.1-8b");
  EXPECT_EQ(l31.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(l31.rope_scaling.factor, 8.0f);
  EXPECT_EQ(l31.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(l31.max_position_embeddings, 131072);
  EXPECT_EQ(SynthPresetConfig("llama-3-8b")->rope_scaling.type, RopeScalingType::kNone);
  EXPECT_EQ(SynthPresetConfig("llama-3-8b")->max_position_embeddings, 8192);
  EXPECT_EQ(SynthPresetConfig("mistral-7b")->sliding_window, 4096);
  EXPECT_EQ(SynthPresetConfig("mistral-7b")->num_kv_heads, 8);
  const ModelConfig qwen = *SynthPresetConfig("qwen2.5-7b");
  EXPECT_TRUE(qwen.attention_qkv_bias);
  EXPECT_EQ(qwen.head_dim, 128);
  EXPECT_EQ(qwen.group_size(), 7);
  const ModelConfig opt66 = *SynthPresetConfig("opt-66b");
  EXPECT_EQ(opt66.num_heads, 72);
  EXPECT_EQ(opt66.head_dim, 128);
  EXPECT_EQ(opt66.num_layers, 64);
  EXPECT_TRUE(opt66.tie_word_embeddings);
  const ModelConfig proj = *SynthPresetConfig("tiny-opt-proj");
  EXPECT_NE(proj.word_embed_proj_dim, proj.hidden_size);
  EXPECT_FALSE(proj.do_layer_norm_before);
  const ModelConfig l3 = *SynthPresetConfig("tiny-llama3");
  EXPECT_EQ(l3.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_TRUE(l3.tie_word_embeddings);
  EXPECT_LT(l3.rope_scaling.original_max_position_embeddings, l3.max_position_embeddings);
}

TEST(SynthesizeTest, DeterministicInSeedAndThreadCount) {
  const Checkpoint a = Synth("tiny-llama", 42, DType::kF32);
  const Checkpoint b = Synth("tiny-llama", 42, DType::kF32);
  const Checkpoint c = Synth("tiny-llama", 43, DType::kF32);
  ASSERT_EQ(a.tensors.size(), ExpectedTensors(a.config).size());
  for (const auto& [name, tensor] : a.tensors) {
    EXPECT_EQ(Bytes(tensor), Bytes(b.tensors.at(name))) << name;
    EXPECT_NE(Bytes(tensor), Bytes(c.tensors.at(name))) << name;
  }
  // A tensor large enough to be filled in parallel, with 1 and several threads.
  ModelConfig wide = *SynthPresetConfig("tiny-opt");
  wide.vocab_size = 8192;  // embed_tokens: 512K elements
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  auto serial = SynthesizeCheckpoint(wide, 5, DType::kBF16);
  omp_set_num_threads(4);
  auto parallel = SynthesizeCheckpoint(wide, 5, DType::kBF16);
  omp_set_num_threads(threads);
  ASSERT_TRUE(serial.ok() && parallel.ok());
  EXPECT_EQ(Bytes(serial->tensors.at("model.decoder.embed_tokens.weight")),
            Bytes(parallel->tensors.at("model.decoder.embed_tokens.weight")));
  // Different tensors of the same shape differ.
  EXPECT_NE(Bytes(a.tensors.at("model.layers.0.mlp.gate_proj.weight")),
            Bytes(a.tensors.at("model.layers.0.mlp.up_proj.weight")));
}

struct Stats {
  double mean = 0, std = 0, max_abs_dev = 0;
};

Stats Measure(const std::vector<float>& v) {
  Stats s;
  for (float x : v) s.mean += x;
  s.mean /= v.size();
  for (float x : v) {
    s.std += (x - s.mean) * (x - s.mean);
    s.max_abs_dev = std::max(s.max_abs_dev, std::fabs(x - s.mean));
  }
  s.std = std::sqrt(s.std / v.size());
  return s;
}

TEST(SynthesizeTest, WeightDistributions) {
  ModelConfig config = *SynthPresetConfig("tiny-qwen2");
  config.vocab_size = 4096;  // enough samples for tight statistics
  auto checkpoint = SynthesizeCheckpoint(config, 9, DType::kF32);
  ASSERT_TRUE(checkpoint.ok());
  // Linear weights: N(0, 1/in_features); bounded tails (Irwin-Hall).
  const Stats embed = Measure(F32(checkpoint->tensors.at("model.embed_tokens.weight")));  // [4096, 64]
  EXPECT_NEAR(embed.mean, 0.0, 0.005);
  EXPECT_NEAR(embed.std, 1.0 / 8.0, 0.125 * 0.03);
  EXPECT_LE(embed.max_abs_dev, 3.47 / 8.0);
  EXPECT_GT(embed.max_abs_dev, 2.5 / 8.0);  // the tails are there
  const Stats down = Measure(F32(checkpoint->tensors.at("model.layers.1.mlp.down_proj.weight")));  // [64, 128]
  EXPECT_NEAR(down.std, 1.0 / std::sqrt(128.0), 0.1 / std::sqrt(128.0));
  // Norm weights around 1, biases small but nonzero.
  const Stats norm = Measure(F32(checkpoint->tensors.at("model.layers.0.input_layernorm.weight")));
  EXPECT_NEAR(norm.mean, 1.0, 0.05);
  EXPECT_NEAR(norm.std, 0.1, 0.03);
  const std::vector<float> bias = F32(checkpoint->tensors.at("model.layers.0.self_attn.q_proj.bias"));
  const Stats bias_stats = Measure(bias);
  EXPECT_NEAR(bias_stats.std, 0.05, 0.015);
  EXPECT_EQ(std::count(bias.begin(), bias.end(), 0.0f), 0);
}

TEST(SynthesizeTest, HalfPrecisionIsTheRoundedF32Model) {
  const Checkpoint f32 = Synth("tiny-opt-proj", 11, DType::kF32);
  const Checkpoint f16 = Synth("tiny-opt-proj", 11, DType::kF16);
  const Checkpoint bf16 = Synth("tiny-opt-proj", 11, DType::kBF16);
  for (const auto& [name, tensor] : f32.tensors) {
    const std::vector<float> ref = F32(tensor);
    const std::vector<float> h = F32(f16.tensors.at(name));
    const std::vector<float> b = F32(bf16.tensors.at(name));
    ASSERT_EQ(h.size(), ref.size());
    EXPECT_EQ(f16.tensors.at(name).nbytes * 2, tensor.nbytes);
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_EQ(h[i], kernels::cpu::Fp16ToFp32(kernels::cpu::Fp32ToFp16(ref[i]))) << name << "[" << i << "]";
      ASSERT_EQ(b[i], kernels::cpu::Bf16ToFp32(kernels::cpu::Fp32ToBf16(ref[i]))) << name << "[" << i << "]";
    }
  }
}

TEST(SynthesizeTest, RejectsBadInput) {
  ModelConfig config = *SynthPresetConfig("tiny-llama");
  EXPECT_FALSE(SynthesizeCheckpoint(config, 1, DType::kQ4_1).ok());
  config.num_kv_heads = 3;
  EXPECT_FALSE(SynthesizeCheckpoint(config, 1, DType::kF32).ok());
}

TEST(WriteHfModelTest, ShardedAndSingleFile) {
  const Checkpoint model = Synth("tiny-llama3", 5, DType::kBF16);
  const std::string dir = TempDir("sharded");
  ASSERT_TRUE(WriteHfModel(model, dir, /*max_shard_bytes=*/40000).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/model.safetensors"));
  std::ifstream index_file(dir + "/model.safetensors.index.json");
  const nlohmann::json index = nlohmann::json::parse(index_file);
  int64_t total = 0;
  for (const auto& [name, tensor] : model.tensors) total += tensor.nbytes;
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), total);
  EXPECT_EQ(index["weight_map"].size(), model.tensors.size());
  std::set<std::string> shards;
  for (const auto& [name, shard] : index["weight_map"].items()) shards.insert(shard.get<std::string>());
  EXPECT_GT(shards.size(), 2u);
  for (const std::string& shard : shards) {
    EXPECT_THAT(shard, ::testing::MatchesRegex("model-0000[0-9]-of-0000[0-9]\\.safetensors"));
    // Each shard respects the limit unless it holds a single larger tensor.
    auto file = SafetensorsFile::Open(dir + "/" + shard);
    ASSERT_TRUE(file.ok());
    int64_t bytes = 0;
    for (const std::string& name : (*file)->TensorNames()) bytes += (*file)->Tensor(name)->nbytes;
    if ((*file)->TensorNames().size() > 1) EXPECT_LE(bytes, 40000) << shard;
  }
  auto read = ReadSafetensorsDir(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), model.tensors.size());
  for (const auto& [name, tensor] : model.tensors) EXPECT_EQ(Bytes(read->at(name)), Bytes(tensor)) << name;
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
  EXPECT_EQ(config["rope_scaling"]["rope_type"], "llama3");

  // Rewriting as one file removes the index, so readers see only the new layout.
  ASSERT_TRUE(WriteHfModel(model, dir).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/model.safetensors.index.json"));
  auto single = ReadSafetensorsDir(dir);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->size(), model.tensors.size());
}

TEST(WriteHfModelTest, QuantizedTensorsAreWrittenAsF32) {
  Checkpoint model = Synth("tiny-llama", 5, DType::kF32);
  // Replace a norm ([64]) with a Q8_0 tensor: 2 blocks of (fp16 scale, 32 x int8).
  auto blocks = std::make_shared<std::vector<uint8_t>>(2 * 34);
  for (int b = 0; b < 2; ++b) {
    const uint16_t scale = kernels::cpu::Fp32ToFp16(0.25f * (b + 1));
    std::memcpy(blocks->data() + 34 * b, &scale, 2);
    for (int i = 0; i < 32; ++i) (*blocks)[34 * b + 2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16 + b));
  }
  HostTensor& norm = model.tensors.at("model.norm.weight");
  norm.dtype = DType::kQ8_0;
  norm.data = blocks->data();
  norm.nbytes = static_cast<int64_t>(blocks->size());
  norm.keep_alive = blocks;
  const std::vector<float> expected = F32(norm);
  ASSERT_EQ(expected.size(), 64u);
  EXPECT_EQ(expected[1], 0.25f * (1 - 16));

  const std::string dir = TempDir("quantized");
  ASSERT_TRUE(WriteHfModel(model, dir).ok());
  auto opened = OpenCheckpoint(dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->Find("model.norm.weight")->dtype, DType::kF32);
  EXPECT_EQ(F32(*opened->Find("model.norm.weight")), expected);
}

// Not a check by itself: exports the tiny presets for the transformers check
// (tests/reference/check_synth_hf_load.py) when POLAR_SYNTH_EXPORT_DIR is set.
TEST(WriteHfModelTest, ExportForTransformersCheck) {
  const char* export_dir = std::getenv("POLAR_SYNTH_EXPORT_DIR");
  if (export_dir == nullptr) GTEST_SKIP() << "POLAR_SYNTH_EXPORT_DIR not set";
  for (const char* preset : kTinyPresets) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      const std::string dir = absl::StrCat(export_dir, "/", preset, dtype == DType::kF32 ? "-f32" : "-bf16");
      ASSERT_TRUE(WriteHfModel(Synth(preset, 1234, dtype), dir).ok()) << dir;
    }
  }
}

}  // namespace
}  // namespace polar
