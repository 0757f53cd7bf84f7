// Tests of checkpoint opening: Hugging Face directories written from
// synthetic models (every tiny preset, old unprefixed tensor names, missing or
// misshapen tensors), small GGUF files built here (name mapping, Q/K
// un-permutation against llama.cpp's forward permutation, metadata errors),
// published parameter counts of the big presets, and the real default model
// (skipped when absent), whose un-permuted rows are compared with a golden
// produced by tests/reference/gguf_qk_golden.py (python gguf + numpy, and
// checked there against transformers).
#include "engine/model/checkpoint.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/model/safetensors_file.h"
#include "engine/model/synth.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace polar {
namespace {

using ::testing::HasSubstr;

std::string TempDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/checkpoint_test_" + std::to_string(::getpid()) + "_" + name;
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

// ---- Hugging Face directories ------------------------------------------------

TEST(CheckpointTest, EveryTinyPresetRoundTripsThroughADirectory) {
  for (const std::string& preset : {"tiny-llama", "tiny-llama3", "tiny-qwen2", "tiny-opt", "tiny-opt-proj"}) {
    SCOPED_TRACE(preset);
    auto config = SynthPresetConfig(preset);
    ASSERT_TRUE(config.ok());
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      auto synth = SynthesizeCheckpoint(*config, 7, dtype);
      ASSERT_TRUE(synth.ok()) << synth.status();
      const std::string dir = TempDir(preset);
      ASSERT_TRUE(WriteHfModel(*synth, dir).ok());
      auto opened = OpenCheckpoint(dir);
      ASSERT_TRUE(opened.ok()) << opened.status();
      EXPECT_EQ(opened->format, "safetensors");
      EXPECT_EQ(ToHfConfigJson(opened->config), ToHfConfigJson(*config));
      EXPECT_EQ(opened->tensors.size(), ExpectedTensors(*config).size());
      for (const auto& [name, tensor] : synth->tensors) {
        const HostTensor* read = opened->Find(name);
        ASSERT_NE(read, nullptr) << name;
        EXPECT_EQ(read->name, name);
        EXPECT_EQ(read->dtype, dtype);
        EXPECT_EQ(read->shape, tensor.shape);
        EXPECT_EQ(Bytes(*read), Bytes(tensor)) << name;
      }
      EXPECT_TRUE(opened->tokenizer_json_path.empty());
      EXPECT_EQ(opened->gguf, nullptr);
    }
  }
}

TEST(CheckpointTest, FindsTokenizerJson) {
  auto synth = SynthesizeCheckpoint(*SynthPresetConfig("tiny-llama"), 1, DType::kF32);
  ASSERT_TRUE(synth.ok());
  const std::string dir = TempDir("tokenizer");
  ASSERT_TRUE(WriteHfModel(*synth, dir).ok());
  std::ofstream(dir + "/tokenizer.json") << "{}";
  auto opened = OpenCheckpoint(dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->tokenizer_json_path, dir + "/tokenizer.json");
}

// Writes `checkpoint`'s tensors, renamed by `rename`, plus its config.
void WriteRenamed(const Checkpoint& checkpoint, const std::string& dir,
                  const std::function<std::string(const std::string&)>& rename,
                  const std::vector<HostTensor>& extra = {}) {
  ASSERT_TRUE(WriteHfModel(checkpoint, dir).ok());  // config.json
  std::vector<HostTensor> tensors;
  for (const auto& [name, tensor] : checkpoint.tensors) {
    const std::string new_name = rename(name);
    if (new_name.empty()) continue;
    tensors.push_back(tensor);
    tensors.back().name = new_name;
  }
  for (const HostTensor& t : extra) tensors.push_back(t);
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
}

TEST(CheckpointTest, NormalizesNamesWithoutTheModelPrefix) {
  for (const std::string& preset : {"tiny-opt", "tiny-llama"}) {
    auto synth = SynthesizeCheckpoint(*SynthPresetConfig(preset), 3, DType::kF32);
    ASSERT_TRUE(synth.ok());
    const std::string dir = TempDir("oldnames");
    // OPT saved from OPTModel: "decoder.layers.0..."; LlamaModel: "layers.0...".
    WriteRenamed(*synth, dir, [](const std::string& name) {
      return name.rfind("model.", 0) == 0 ? name.substr(6) : name;
    });
    auto opened = OpenCheckpoint(dir);
    ASSERT_TRUE(opened.ok()) << opened.status();
    for (const auto& [name, tensor] : synth->tensors) {
      ASSERT_NE(opened->Find(name), nullptr) << name;
      EXPECT_EQ(Bytes(*opened->Find(name)), Bytes(tensor));
    }
  }
}

TEST(CheckpointTest, MissingTensorIsNamed) {
  auto synth = SynthesizeCheckpoint(*SynthPresetConfig("tiny-qwen2"), 3, DType::kF32);
  ASSERT_TRUE(synth.ok());
  const std::string dir = TempDir("missing");
  WriteRenamed(*synth, dir, [](const std::string& name) {
    return name == "model.layers.1.self_attn.k_proj.bias" ? "" : name;
  });
  auto opened = OpenCheckpoint(dir);
  ASSERT_FALSE(opened.ok());
  EXPECT_THAT(opened.status().message(), HasSubstr("tensor 'model.layers.1.self_attn.k_proj.bias' is missing"));
  EXPECT_THAT(opened.status().message(), HasSubstr("[32]"));
  EXPECT_THAT(opened.status().message(), HasSubstr(dir));
}

TEST(CheckpointTest, WrongShapeIsNamedAndExtrasAreIgnored) {
  auto config = *SynthPresetConfig("tiny-llama");
  auto synth = SynthesizeCheckpoint(config, 3, DType::kF32);
  ASSERT_TRUE(synth.ok());
  // Extra tensors (rotary inv_freq buffers of old checkpoints) are ignored.
  const HostTensor inv_freq = MakeOwnedF32("model.layers.0.self_attn.rotary_emb.inv_freq", {8},
                                           {1, 0.5f, 0.25f, 0.125f, 0.0625f, 0.03125f, 0.015625f, 0.0078125f});
  const std::string ok_dir = TempDir("extra");
  WriteRenamed(*synth, ok_dir, [](const std::string& name) { return name; }, {inv_freq});
  auto opened = OpenCheckpoint(ok_dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_NE(opened->Find("model.layers.0.self_attn.rotary_emb.inv_freq"), nullptr);

  // A config that disagrees with the tensors: more kv heads than stored.
  const std::string bad_dir = TempDir("shape");
  WriteRenamed(*synth, bad_dir, [](const std::string& name) { return name; });
  ModelConfig wider = config;
  wider.num_kv_heads = 4;
  std::ofstream(bad_dir + "/config.json") << ToHfConfigJson(wider);
  auto bad = OpenCheckpoint(bad_dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr("tensor 'model.layers.0.self_attn.k_proj.weight' has shape [32, 64], expected [64, 64]"));
}

TEST(CheckpointTest, ValidateTensorsChecksByteSizes) {
  auto synth = SynthesizeCheckpoint(*SynthPresetConfig("tiny-opt"), 3, DType::kF16);
  ASSERT_TRUE(synth.ok());
  ASSERT_TRUE(ValidateTensors(*synth).ok());
  synth->tensors["model.decoder.layers.0.fc1.bias"].nbytes -= 2;
  auto status = ValidateTensors(*synth);
  EXPECT_THAT(status.message(), HasSubstr("'model.decoder.layers.0.fc1.bias' holds 510 bytes"));
}

TEST(CheckpointTest, OpenErrors) {
  const std::string dir = TempDir("errors");
  EXPECT_EQ(OpenCheckpoint(dir + "/nothing").status().code(), absl::StatusCode::kNotFound);
  auto no_config = OpenCheckpoint(dir);
  EXPECT_THAT(no_config.status().message(), HasSubstr("config.json"));
  std::ofstream(dir + "/config.json") << R"({"model_type": "llama", "vocab_size": 8})";
  EXPECT_THAT(OpenCheckpoint(dir).status().message(), HasSubstr("'hidden_size' is missing"));
  std::ofstream(dir + "/config.json") << ToHfConfigJson(*SynthPresetConfig("tiny-llama"));
  EXPECT_THAT(OpenCheckpoint(dir).status().message(), HasSubstr("model.safetensors"));
  std::ofstream(dir + "/weights.bin") << "not a gguf at all";
  EXPECT_THAT(OpenCheckpoint(dir + "/weights.bin").status().message(), HasSubstr("not a GGUF"));
}

TEST(CheckpointTest, PublishedParameterCounts) {
  // Parameter counts published for these models (tied embeddings counted once).
  const std::pair<const char*, int64_t> published[] = {
      {"llama-2-7b", 6738415616},  {"llama-3-8b", 8030261248},  {"llama-3.1-8b", 8030261248},
      {"mistral-7b", 7241732096},  {"qwen2.5-7b", 7615616512},  {"opt-6.7b", 6658473984},
      {"opt-66b", 65719701504},
  };
  for (const auto& [preset, count] : published) {
    auto config = SynthPresetConfig(preset);
    ASSERT_TRUE(config.ok()) << preset;
    int64_t total = 0;
    for (const auto& [name, shape] : ExpectedTensors(*config)) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      total += n;
    }
    EXPECT_EQ(total, count) << preset;
  }
}

TEST(CheckpointTest, OptExpectedTensorsFollowTransformers) {
  ModelConfig c = *SynthPresetConfig("tiny-opt-proj");  // proj 32, post-LN
  std::map<std::string, std::vector<int64_t>> expected;
  for (auto& [name, shape] : ExpectedTensors(c)) expected[name] = shape;
  EXPECT_EQ(expected.at("model.decoder.embed_tokens.weight"), (std::vector<int64_t>{512, 32}));
  EXPECT_EQ(expected.at("model.decoder.embed_positions.weight"), (std::vector<int64_t>{130, 64}));
  EXPECT_EQ(expected.at("model.decoder.project_in.weight"), (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(expected.at("model.decoder.project_out.weight"), (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(expected.count("model.decoder.final_layer_norm.weight"), 0u);  // post-LN: none
  EXPECT_EQ(expected.count("lm_head.weight"), 0u);                         // tied
  EXPECT_EQ(expected.at("model.decoder.layers.1.fc1.weight"), (std::vector<int64_t>{256, 64}));
  c.do_layer_norm_before = true;
  c.tie_word_embeddings = false;
  expected.clear();
  for (auto& [name, shape] : ExpectedTensors(c)) expected[name] = shape;
  EXPECT_EQ(expected.at("model.decoder.final_layer_norm.bias"), (std::vector<int64_t>{64}));
  EXPECT_EQ(expected.at("lm_head.weight"), (std::vector<int64_t>{512, 32}));
}

// ---- small GGUF files built here ---------------------------------------------

// Writes GGUF v3 bytes: typed metadata, F32 tensors, 32-byte alignment.
class GgufBuilder {
 public:
  void String(const std::string& key, const std::string& value) {
    Key(key, 8);
    Str(meta_, value);
    ++kv_count_;
  }
  void U32(const std::string& key, uint32_t value) {
    Key(key, 4);
    Put(meta_, value);
    ++kv_count_;
  }
  void F32(const std::string& key, float value) {
    Key(key, 6);
    Put(meta_, value);
    ++kv_count_;
  }
  void StringArray(const std::string& key, const std::vector<std::string>& values) {
    Key(key, 9);
    Put(meta_, uint32_t{8});
    Put(meta_, uint64_t{values.size()});
    for (const std::string& v : values) Str(meta_, v);
    ++kv_count_;
  }
  // `shape` outermost first, as Polar and PyTorch print it.
  void Tensor(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& values) {
    Str(infos_, name);
    Put(infos_, static_cast<uint32_t>(shape.size()));
    for (auto it = shape.rbegin(); it != shape.rend(); ++it) Put(infos_, static_cast<uint64_t>(*it));
    Put(infos_, uint32_t{0});  // F32
    while (data_.size() % 32 != 0) data_.push_back(0);
    Put(infos_, static_cast<uint64_t>(data_.size()));
    const size_t at = data_.size();
    data_.resize(at + values.size() * 4);
    std::memcpy(data_.data() + at, values.data(), values.size() * 4);
    ++tensor_count_;
  }
  std::string Write(const std::string& path) const {
    std::vector<uint8_t> out;
    Put(out, uint32_t{0x46554747});
    Put(out, uint32_t{3});
    Put(out, tensor_count_);
    Put(out, kv_count_);
    out.insert(out.end(), meta_.begin(), meta_.end());
    out.insert(out.end(), infos_.begin(), infos_.end());
    while (out.size() % 32 != 0) out.push_back(0);
    out.insert(out.end(), data_.begin(), data_.end());
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(out.data()), out.size());
    return path;
  }

 private:
  template <typename T>
  static void Put(std::vector<uint8_t>& out, T value) {
    const size_t at = out.size();
    out.resize(at + sizeof(T));
    std::memcpy(out.data() + at, &value, sizeof(T));
  }
  static void Str(std::vector<uint8_t>& out, const std::string& s) {
    Put(out, uint64_t{s.size()});
    out.insert(out.end(), s.begin(), s.end());
  }
  void Key(const std::string& key, uint32_t type) {
    Str(meta_, key);
    Put(meta_, type);
  }
  std::vector<uint8_t> meta_, infos_, data_;
  uint64_t kv_count_ = 0, tensor_count_ = 0;
};

std::vector<float> RandomValues(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// llama.cpp's convert_hf_to_gguf permute(): w.reshape(n_head, 2, hd/2, n_in)
// .swapaxes(1, 2).reshape(w.shape), written out index by index.
std::vector<float> LlamaCppPermute(const std::vector<float>& w, int64_t n_head, int64_t n_in) {
  const int64_t rows = static_cast<int64_t>(w.size()) / n_in;
  const int64_t half = rows / n_head / 2;
  std::vector<float> out(w.size());
  int64_t dst_row = 0;
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t i = 0; i < half; ++i) {      // axis 1 after the swap
      for (int64_t s = 0; s < 2; ++s) {       // axis 2 after the swap
        const int64_t src_row = (h * 2 + s) * half + i;  // source index (h, s, i)
        std::copy_n(w.begin() + src_row * n_in, n_in, out.begin() + dst_row * n_in);
        ++dst_row;
      }
    }
  }
  return out;
}

// A tiny llama GGUF: hidden 32, 4 heads of 8, 2 kv heads, ffn 48, 2 layers, vocab 16.
class TinyGgufTest : public ::testing::Test {
 protected:
  static constexpr int64_t kHidden = 32, kHeads = 4, kKvHeads = 2, kHeadDim = 8, kFfn = 48, kLayers = 2, kVocab = 16;

  void SetUp() override {
    dir_ = TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    uint32_t seed = 100;
    hf_["model.embed_tokens.weight"] = {{kVocab, kHidden}, RandomValues(kVocab * kHidden, seed++)};
    hf_["model.norm.weight"] = {{kHidden}, RandomValues(kHidden, seed++)};
    for (int64_t l = 0; l < kLayers; ++l) {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      hf_[p + "input_layernorm.weight"] = {{kHidden}, RandomValues(kHidden, seed++)};
      hf_[p + "post_attention_layernorm.weight"] = {{kHidden}, RandomValues(kHidden, seed++)};
      hf_[p + "self_attn.q_proj.weight"] = {{kHeads * kHeadDim, kHidden}, RandomValues(kHeads * kHeadDim * kHidden, seed++)};
      hf_[p + "self_attn.k_proj.weight"] = {{kKvHeads * kHeadDim, kHidden}, RandomValues(kKvHeads * kHeadDim * kHidden, seed++)};
      hf_[p + "self_attn.v_proj.weight"] = {{kKvHeads * kHeadDim, kHidden}, RandomValues(kKvHeads * kHeadDim * kHidden, seed++)};
      hf_[p + "self_attn.o_proj.weight"] = {{kHidden, kHeads * kHeadDim}, RandomValues(kHidden * kHeads * kHeadDim, seed++)};
      hf_[p + "mlp.gate_proj.weight"] = {{kFfn, kHidden}, RandomValues(kFfn * kHidden, seed++)};
      hf_[p + "mlp.up_proj.weight"] = {{kFfn, kHidden}, RandomValues(kFfn * kHidden, seed++)};
      hf_[p + "mlp.down_proj.weight"] = {{kHidden, kFfn}, RandomValues(kHidden * kFfn, seed++)};
    }
  }

  // Metadata and tensors as llama.cpp's converter writes them.
  GgufBuilder Builder(const std::string& arch = "llama", bool with_output = false) {
    GgufBuilder b;
    b.String("general.architecture", arch);
    b.U32(arch + ".block_count", kLayers);
    b.U32(arch + ".context_length", 128);
    b.U32(arch + ".embedding_length", kHidden);
    b.U32(arch + ".feed_forward_length", kFfn);
    b.U32(arch + ".attention.head_count", kHeads);
    b.U32(arch + ".attention.head_count_kv", kKvHeads);
    b.F32(arch + ".rope.freq_base", 50000.0f);
    b.F32(arch + ".attention.layer_norm_rms_epsilon", 1e-5f);
    b.U32(arch + ".rope.dimension_count", rope_dims_);
    std::vector<std::string> tokens;
    for (int i = 0; i < kVocab; ++i) tokens.push_back(absl::StrCat("t", i));
    b.StringArray("tokenizer.ggml.tokens", tokens);
    b.U32("tokenizer.ggml.bos_token_id", 1);
    b.U32("tokenizer.ggml.eos_token_id", 2);
    b.U32("tokenizer.ggml.eot_token_id", 3);
    b.Tensor("token_embd.weight", {kVocab, kHidden}, hf_["model.embed_tokens.weight"].second);
    b.Tensor("output_norm.weight", {kHidden}, hf_["model.norm.weight"].second);
    if (with_output) b.Tensor("output.weight", {kVocab, kHidden}, RandomValues(kVocab * kHidden, 7));
    const bool permute = arch != "qwen2";
    for (int64_t l = 0; l < kLayers; ++l) {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      const std::string g = absl::StrCat("blk.", l, ".");
      auto q = hf_[p + "self_attn.q_proj.weight"].second;
      auto k = hf_[p + "self_attn.k_proj.weight"].second;
      if (permute) {
        q = LlamaCppPermute(q, kHeads, kHidden);
        k = LlamaCppPermute(k, kKvHeads, kHidden);
      }
      b.Tensor(g + "attn_norm.weight", {kHidden}, hf_[p + "input_layernorm.weight"].second);
      b.Tensor(g + "attn_q.weight", {kHeads * kHeadDim, kHidden}, q);
      b.Tensor(g + "attn_k.weight", {kKvHeads * kHeadDim, kHidden}, k);
      b.Tensor(g + "attn_v.weight", {kKvHeads * kHeadDim, kHidden}, hf_[p + "self_attn.v_proj.weight"].second);
      b.Tensor(g + "attn_output.weight", {kHidden, kHeads * kHeadDim}, hf_[p + "self_attn.o_proj.weight"].second);
      b.Tensor(g + "ffn_norm.weight", {kHidden}, hf_[p + "post_attention_layernorm.weight"].second);
      b.Tensor(g + "ffn_gate.weight", {kFfn, kHidden}, hf_[p + "mlp.gate_proj.weight"].second);
      b.Tensor(g + "ffn_up.weight", {kFfn, kHidden}, hf_[p + "mlp.up_proj.weight"].second);
      if (l != skip_layer_down_) b.Tensor(g + "ffn_down.weight", {kHidden, kFfn}, hf_[p + "mlp.down_proj.weight"].second);
    }
    return b;
  }

  std::string dir_;
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> hf_;
  int64_t skip_layer_down_ = -1;
  uint32_t rope_dims_ = kHeadDim;
};

TEST_F(TinyGgufTest, MapsNamesAndUndoesThePermutation) {
  auto checkpoint = OpenCheckpoint(Builder().Write(dir_ + "/tiny.gguf"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->format, "gguf");
  ASSERT_NE(checkpoint->gguf, nullptr);
  const ModelConfig& c = checkpoint->config;
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.num_layers, kLayers);
  EXPECT_EQ(c.hidden_size, kHidden);
  EXPECT_EQ(c.num_heads, kHeads);
  EXPECT_EQ(c.num_kv_heads, kKvHeads);
  EXPECT_EQ(c.head_dim, kHeadDim);
  EXPECT_EQ(c.intermediate_size, kFfn);
  EXPECT_EQ(c.vocab_size, kVocab);  // from the token list: no llama.vocab_size key
  EXPECT_EQ(c.max_position_embeddings, 128);
  EXPECT_EQ(c.rope_theta, 50000.0f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_THAT(c.eos_token_ids, ::testing::ElementsAre(2, 3));  // eos and eot
  // Every tensor back under its Hugging Face name, in Hugging Face layout.
  for (const auto& [name, expected] : hf_) {
    const HostTensor* t = checkpoint->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->shape, expected.first) << name;
    EXPECT_EQ(F32(*t), expected.second) << name;
  }
  EXPECT_EQ(checkpoint->Find("lm_head.weight"), nullptr);
}

TEST_F(TinyGgufTest, UntiedWhenOutputWeightExists) {
  auto checkpoint = OpenCheckpoint(Builder("llama", /*with_output=*/true).Write(dir_ + "/untied.gguf"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_FALSE(checkpoint->config.tie_word_embeddings);
  ASSERT_NE(checkpoint->Find("lm_head.weight"), nullptr);
  EXPECT_EQ(F32(*checkpoint->Find("lm_head.weight")), RandomValues(kVocab * kHidden, 7));
}

TEST_F(TinyGgufTest, Qwen2IsNotPermuted) {
  GgufBuilder b = Builder("qwen2");
  for (int64_t l = 0; l < kLayers; ++l) {
    b.Tensor(absl::StrCat("blk.", l, ".attn_q.bias"), {kHeads * kHeadDim}, RandomValues(kHeads * kHeadDim, 40 + l));
    b.Tensor(absl::StrCat("blk.", l, ".attn_k.bias"), {kKvHeads * kHeadDim}, RandomValues(kKvHeads * kHeadDim, 50 + l));
    b.Tensor(absl::StrCat("blk.", l, ".attn_v.bias"), {kKvHeads * kHeadDim}, RandomValues(kKvHeads * kHeadDim, 60 + l));
  }
  auto checkpoint = OpenCheckpoint(b.Write(dir_ + "/qwen2.gguf"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->config.model_type, "qwen2");
  EXPECT_TRUE(checkpoint->config.attention_qkv_bias);
  EXPECT_EQ(F32(*checkpoint->Find("model.layers.1.self_attn.q_proj.weight")),
            hf_["model.layers.1.self_attn.q_proj.weight"].second);
  EXPECT_EQ(F32(*checkpoint->Find("model.layers.1.self_attn.k_proj.bias")), RandomValues(kKvHeads * kHeadDim, 51));
}

TEST_F(TinyGgufTest, BiasRowsAreUnpermutedToo) {
  // A llama GGUF with q/k biases: the converter permutes the biases as rows.
  const std::vector<float> q_bias = RandomValues(kHeads * kHeadDim, 70);
  GgufBuilder b = Builder();
  for (int64_t l = 0; l < kLayers; ++l) {
    b.Tensor(absl::StrCat("blk.", l, ".attn_q.bias"), {kHeads * kHeadDim}, LlamaCppPermute(q_bias, kHeads, 1));
    b.Tensor(absl::StrCat("blk.", l, ".attn_k.bias"), {kKvHeads * kHeadDim},
             LlamaCppPermute(RandomValues(kKvHeads * kHeadDim, 71), kKvHeads, 1));
    b.Tensor(absl::StrCat("blk.", l, ".attn_v.bias"), {kKvHeads * kHeadDim}, RandomValues(kKvHeads * kHeadDim, 72));
    b.Tensor(absl::StrCat("blk.", l, ".attn_output.bias"), {kHidden}, RandomValues(kHidden, 73));
  }
  auto checkpoint = OpenCheckpoint(b.Write(dir_ + "/bias.gguf"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_TRUE(checkpoint->config.attention_qkv_bias && checkpoint->config.attention_out_bias);
  EXPECT_EQ(F32(*checkpoint->Find("model.layers.0.self_attn.q_proj.bias")), q_bias);
  EXPECT_EQ(F32(*checkpoint->Find("model.layers.1.self_attn.k_proj.bias")), RandomValues(kKvHeads * kHeadDim, 71));
}

TEST_F(TinyGgufTest, Errors) {
  skip_layer_down_ = 1;
  auto missing = OpenCheckpoint(Builder().Write(dir_ + "/missing.gguf"));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("'model.layers.1.mlp.down_proj.weight' is missing"));
  EXPECT_THAT(missing.status().message(), HasSubstr("missing.gguf"));
  skip_layer_down_ = -1;

  auto gpt2 = OpenCheckpoint(Builder("gpt2").Write(dir_ + "/gpt2.gguf"));
  EXPECT_EQ(gpt2.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(gpt2.status().message(), HasSubstr("general.architecture 'gpt2'"));

  GgufBuilder freqs = Builder();
  freqs.Tensor("rope_freqs.weight", {kHeadDim / 2}, {1, 1, 2, 8});
  auto with_freqs = OpenCheckpoint(freqs.Write(dir_ + "/freqs.gguf"));
  ASSERT_TRUE(with_freqs.ok()) << with_freqs.status();
  EXPECT_EQ(with_freqs->config.rope_freq_factors, (std::vector<float>{1, 1, 2, 8}));
  GgufBuilder bad_freqs = Builder();
  bad_freqs.Tensor("rope_freqs.weight", {kHeadDim / 2}, {1, 0, 2, 8});
  EXPECT_THAT(OpenCheckpoint(bad_freqs.Write(dir_ + "/bad_freqs.gguf")).status().message(),
              HasSubstr("rope_freqs"));

  rope_dims_ = kHeadDim / 2;  // partial rotary
  auto partial = OpenCheckpoint(Builder().Write(dir_ + "/partial.gguf"));
  EXPECT_EQ(partial.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(partial.status().message(), HasSubstr("rope.dimension_count"));
  rope_dims_ = kHeadDim;

  GgufBuilder yarn = Builder();
  yarn.String("llama.rope.scaling.type", "yarn");
  EXPECT_THAT(OpenCheckpoint(yarn.Write(dir_ + "/yarn.gguf")).status().message(), HasSubstr("yarn"));
}

TEST(UnpermuteTest, RejectsShapesThatAreNotHeads) {
  const HostTensor t = MakeOwnedF32("q", {6, 4}, std::vector<float>(24, 1.0f));
  EXPECT_FALSE(UnpermuteGgufQkRows(t, 4).ok());  // 6 rows are not 4 heads
  EXPECT_FALSE(UnpermuteGgufQkRows(t, 2).ok());  // heads of 3 rows: odd
  auto ok = UnpermuteGgufQkRows(t, 3);
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(HfNameForGgufTensor("blk.12.ffn_down.weight"), "model.layers.12.mlp.down_proj.weight");
  EXPECT_EQ(HfNameForGgufTensor("blk.3.attn_output.bias"), "model.layers.3.self_attn.o_proj.bias");
  EXPECT_EQ(HfNameForGgufTensor("blk.x.attn_q.weight"), "");
  EXPECT_EQ(HfNameForGgufTensor("blk.01.attn_q.weight"), "");
  EXPECT_EQ(HfNameForGgufTensor("rope_freqs.weight"), "");
}

// ---- the real default model ----------------------------------------------------

TEST(DefaultModelTest, ConfigTensorsAndUnpermutedRows) {
  const std::string path = POLAR_DEFAULT_MODEL;
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "default model not fetched: " << path;
  auto checkpoint = OpenCheckpoint(path);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const ModelConfig& c = checkpoint->config;
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kNone);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_THAT(c.eos_token_ids, ::testing::ElementsAre(2));
  for (const auto& [name, shape] : ExpectedTensors(c)) {
    ASSERT_NE(checkpoint->Find(name), nullptr) << name;
  }
  EXPECT_EQ(checkpoint->Find("model.layers.0.self_attn.q_proj.weight")->dtype, DType::kQ4_1);

  std::ifstream golden_file(std::string(POLAR_TEST_DATA_DIR) + "/model/smollm2_layer0_qk_rows.json");
  ASSERT_TRUE(golden_file) << "run tests/reference/gguf_qk_golden.py";
  const nlohmann::json golden = nlohmann::json::parse(golden_file);
  const int64_t cols = golden["cols"].get<int64_t>();
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"}) {
    const std::vector<float> values = F32(*checkpoint->Find(name));
    const int64_t row_len = checkpoint->Find(name)->shape[1];
    const auto& rows = golden[name]["rows"];
    ASSERT_GE(rows.size(), 4u);
    for (size_t r = 0; r < rows.size(); ++r) {
      const int64_t row = rows[r].get<int64_t>();
      for (int64_t col = 0; col < cols; ++col) {
        const float expected = golden[name]["values"][r][col].get<float>();
        ASSERT_NEAR(values[row * row_len + col], expected, 1e-6f * std::max(1.0f, std::fabs(expected)))
            << name << " row " << row << " col " << col;
      }
    }
  }
}

}  // namespace
}  // namespace polar
