// Tests of ModelConfig: parsing the published config.json of each supported
// model family (texts as published on the Hugging Face Hub), RoPE scaling
// variants in both the transformers 4.x and 5.x spellings, defaults, errors
// naming the key, Validate, and the ToHfConfigJson round trip.
#include "engine/model/model_config.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace polar {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// meta-llama/Llama-2-7b-hf
constexpr char kLlama2_7b[] = R"({
  "_name_or_path": "meta-llama/Llama-2-7b-hf",
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 11008,
  "max_position_embeddings": 4096,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 32,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.31.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

// meta-llama/Llama-3.1-8B-Instruct
constexpr char kLlama31_8b[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.42.3",
  "use_cache": true,
  "vocab_size": 128256
})";

// mistralai/Mistral-7B-v0.1
constexpr char kMistral7b[] = R"({
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

// Qwen/Qwen2.5-7B
constexpr char kQwen25_7b[] = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 3584,
  "initializer_range": 0.02,
  "intermediate_size": 18944,
  "max_position_embeddings": 131072,
  "max_window_layers": 28,
  "model_type": "qwen2",
  "num_attention_heads": 28,
  "num_hidden_layers": 28,
  "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_mrope": false,
  "use_sliding_window": false,
  "vocab_size": 152064
})";

// facebook/opt-125m
constexpr char kOpt125m[] = R"({
  "_name_or_path": "facebook/opt-125m",
  "_remove_final_layer_norm": false,
  "activation_dropout": 0.0,
  "activation_function": "relu",
  "architectures": ["OPTForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 2,
  "do_layer_norm_before": true,
  "dropout": 0.1,
  "eos_token_id": 2,
  "ffn_dim": 3072,
  "hidden_size": 768,
  "init_std": 0.02,
  "layerdrop": 0.0,
  "max_position_embeddings": 2048,
  "model_type": "opt",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "prefix": "</s>",
  "torch_dtype": "float16",
  "transformers_version": "4.21.0.dev0",
  "use_cache": true,
  "vocab_size": 50272,
  "word_embed_proj_dim": 768
})";

// facebook/opt-350m
constexpr char kOpt350m[] = R"({
  "_name_or_path": "facebook/opt-350m",
  "activation_dropout": 0.0,
  "activation_function": "relu",
  "architectures": ["OPTForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 2,
  "do_layer_norm_before": false,
  "dropout": 0.1,
  "eos_token_id": 2,
  "ffn_dim": 4096,
  "hidden_size": 1024,
  "init_std": 0.02,
  "layerdrop": 0.0,
  "max_position_embeddings": 2048,
  "model_type": "opt",
  "num_attention_heads": 16,
  "num_hidden_layers": 24,
  "pad_token_id": 1,
  "prefix": "</s>",
  "torch_dtype": "float16",
  "transformers_version": "4.20.0.dev0",
  "use_cache": true,
  "vocab_size": 50272,
  "word_embed_proj_dim": 512
})";

ModelConfig Parse(const std::string& text) {
  auto config = ParseHfConfig(text, "config.json");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : ModelConfig{};
}

// `base` with `patch` merged in (RFC 7396: null removes a key).
std::string Patched(const char* base, const std::string& patch) {
  nlohmann::json j = nlohmann::json::parse(base);
  j.merge_patch(nlohmann::json::parse(patch));
  return j.dump();
}

// `base` with `key` set to null (merge_patch would remove it instead).
std::string WithNull(const std::string& base, const std::vector<std::string>& keys) {
  nlohmann::json j = nlohmann::json::parse(base);
  for (const std::string& key : keys) j[key] = nullptr;
  return j.dump();
}

absl::Status ParseStatus(const std::string& text) { return ParseHfConfig(text, "some/config.json").status(); }

void ExpectSameConfig(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.family, b.family);
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.norm_eps, b.norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  if (a.rope_scaling.type != RopeScalingType::kNone) EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  if (a.rope_scaling.type == RopeScalingType::kLlama3) {
    EXPECT_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor);
    EXPECT_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor);
    EXPECT_EQ(a.rope_scaling.original_max_position_embeddings, b.rope_scaling.original_max_position_embeddings);
  }
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_qkv_bias, b.attention_qkv_bias);
  EXPECT_EQ(a.attention_out_bias, b.attention_out_bias);
  EXPECT_EQ(a.mlp_bias, b.mlp_bias);
  EXPECT_EQ(a.do_layer_norm_before, b.do_layer_norm_before);
  if (a.family == ArchFamily::kOpt) {
    EXPECT_EQ(a.word_embed_proj_dim, b.word_embed_proj_dim);
    EXPECT_EQ(a.position_offset, b.position_offset);
  }
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
}

TEST(ModelConfigTest, Llama2_7b) {
  const ModelConfig c = Parse(kLlama2_7b);
  EXPECT_EQ(c.family, ArchFamily::kLlama);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 11008);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.rope_theta, 10000.0f);  // absent: LlamaConfig's default
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kNone);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_qkv_bias || c.attention_out_bias || c.mlp_bias);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(2));
  EXPECT_EQ(c.group_size(), 1);
}

TEST(ModelConfigTest, Llama31_8b) {
  const ModelConfig c = Parse(kLlama31_8b);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.group_size(), 4);
  EXPECT_EQ(c.kv_dim(), 1024);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0f);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(128001, 128008, 128009));
}

TEST(ModelConfigTest, Mistral7b) {
  const ModelConfig c = Parse(kMistral7b);
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.family, ArchFamily::kLlama);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  // null means full attention; absent means MistralConfig's default 4096.
  EXPECT_EQ(Parse(WithNull(kMistral7b, {"sliding_window"})).sliding_window, 0);
  EXPECT_EQ(Parse(Patched(kMistral7b, R"({"sliding_window": 1024})")).sliding_window, 1024);
  nlohmann::json without = nlohmann::json::parse(kMistral7b);
  without.erase("sliding_window");
  EXPECT_EQ(Parse(without.dump()).sliding_window, 4096);
}

TEST(ModelConfigTest, Qwen25_7b) {
  const ModelConfig c = Parse(kQwen25_7b);
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_EQ(c.vocab_size, 152064);
  EXPECT_EQ(c.hidden_size, 3584);
  EXPECT_EQ(c.intermediate_size, 18944);
  EXPECT_EQ(c.num_layers, 28);
  EXPECT_EQ(c.num_heads, 28);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_EQ(c.rope_theta, 1000000.0f);
  EXPECT_TRUE(c.attention_qkv_bias);
  EXPECT_FALSE(c.attention_out_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window is false
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(151643));
  auto sliding = ParseStatus(Patched(kQwen25_7b, R"({"use_sliding_window": true})"));
  EXPECT_EQ(sliding.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(sliding.message(), HasSubstr("use_sliding_window"));
}

TEST(ModelConfigTest, Opt125m) {
  const ModelConfig c = Parse(kOpt125m);
  EXPECT_EQ(c.family, ArchFamily::kOpt);
  EXPECT_EQ(c.vocab_size, 50272);
  EXPECT_EQ(c.hidden_size, 768);
  EXPECT_EQ(c.intermediate_size, 3072);
  EXPECT_EQ(c.num_layers, 12);
  EXPECT_EQ(c.num_heads, 12);
  EXPECT_EQ(c.num_kv_heads, 12);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_EQ(c.word_embed_proj_dim, 768);
  EXPECT_TRUE(c.do_layer_norm_before);
  EXPECT_TRUE(c.attention_qkv_bias && c.attention_out_bias && c.mlp_bias);
  EXPECT_TRUE(c.tie_word_embeddings);  // OPTConfig's default
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.position_offset, 2);
  EXPECT_EQ(c.bos_token_id, 2);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(2));
}

TEST(ModelConfigTest, Opt350m) {
  const ModelConfig c = Parse(kOpt350m);
  EXPECT_EQ(c.hidden_size, 1024);
  EXPECT_EQ(c.word_embed_proj_dim, 512);
  EXPECT_FALSE(c.do_layer_norm_before);
  EXPECT_EQ(c.num_layers, 24);
  EXPECT_EQ(c.head_dim, 64);
}

TEST(ModelConfigTest, OptRejectsWhatItCannotRun) {
  auto gelu = ParseStatus(Patched(kOpt125m, R"({"activation_function": "gelu"})"));
  EXPECT_EQ(gelu.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(gelu.message(), HasSubstr("activation_function 'gelu'"));
  EXPECT_THAT(ParseStatus(Patched(kOpt125m, R"({"_remove_final_layer_norm": true})")).message(),
              HasSubstr("_remove_final_layer_norm"));
  EXPECT_THAT(ParseStatus(Patched(kOpt125m, R"({"layer_norm_elementwise_affine": false})")).message(),
              HasSubstr("layer_norm_elementwise_affine"));
  EXPECT_THAT(ParseStatus(Patched(kOpt125m, R"({"num_attention_heads": 7})")).message(),
              HasSubstr("num_attention_heads"));
  const ModelConfig no_bias = Parse(Patched(kOpt125m, R"({"enable_bias": false, "tie_word_embeddings": false})"));
  EXPECT_FALSE(no_bias.attention_qkv_bias || no_bias.attention_out_bias || no_bias.mlp_bias);
  EXPECT_FALSE(no_bias.tie_word_embeddings);
}

TEST(ModelConfigTest, RopeScalingVariants) {
  // 4.x spelling with the old "type" key.
  ModelConfig linear = Parse(Patched(kLlama2_7b, R"({"rope_scaling": {"type": "linear", "factor": 4.0}})"));
  EXPECT_EQ(linear.rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_EQ(linear.rope_scaling.factor, 4.0f);
  // transformers 5.x: rope_parameters carries the theta too.
  ModelConfig v5 = Parse(Patched(kLlama2_7b, R"({"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
      "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 2048}})"));
  EXPECT_EQ(v5.rope_theta, 500000.0f);
  EXPECT_EQ(v5.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(v5.rope_scaling.factor, 32.0f);
  EXPECT_EQ(v5.rope_scaling.original_max_position_embeddings, 2048);
  ModelConfig v5_default =
      Parse(Patched(kLlama2_7b, R"({"rope_parameters": {"rope_type": "default", "rope_theta": 250.0}})"));
  EXPECT_EQ(v5_default.rope_theta, 250.0f);
  EXPECT_EQ(v5_default.rope_scaling.type, RopeScalingType::kNone);

  for (const char* type : {"yarn", "dynamic", "longrope"}) {
    auto status = ParseStatus(
        Patched(kLlama2_7b, absl::StrCat(R"({"rope_scaling": {"rope_type": ")", type, R"(", "factor": 2.0}})")));
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << type;
    EXPECT_THAT(status.message(), HasSubstr(type));
  }
  // llama3 needs all four of its keys.
  auto incomplete = ParseStatus(Patched(kLlama2_7b, R"({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}})"));
  EXPECT_THAT(incomplete.message(), HasSubstr("low_freq_factor"));
  auto inverted = ParseStatus(Patched(kLlama31_8b, R"({"rope_scaling": {"low_freq_factor": 5.0}})"));
  EXPECT_THAT(inverted.message(), HasSubstr("low_freq_factor"));
}

TEST(ModelConfigTest, DefaultsAndOptionalKeys) {
  // head_dim given explicitly (not hidden / heads), GQA default, attention_bias.
  ModelConfig c = Parse(WithNull(Patched(kLlama2_7b, R"({"head_dim": 64, "attention_bias": true, "mlp_bias": true})"),
                                 {"num_key_value_heads"}));
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.q_dim(), 2048);
  EXPECT_EQ(c.num_kv_heads, 32);
  EXPECT_TRUE(c.attention_qkv_bias && c.attention_out_bias && c.mlp_bias);
  // eos null means none; an integer written as 2.0 is accepted.
  ModelConfig d =
      Parse(WithNull(Patched(kLlama2_7b, R"({"vocab_size": 32000.0})"), {"eos_token_id", "bos_token_id"}));
  EXPECT_TRUE(d.eos_token_ids.empty());
  EXPECT_EQ(d.bos_token_id, -1);
  EXPECT_EQ(d.vocab_size, 32000);
}

TEST(ModelConfigTest, ErrorsNameTheKey) {
  struct Case {
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {"{", "not valid JSON"},
      {"[]", "not a JSON object"},
      {R"({"vocab_size": 3})", "'model_type' is missing"},
      {Patched(kLlama2_7b, R"({"model_type": "gpt2"})"), "model_type 'gpt2'"},
      {WithNull(kLlama2_7b, {"hidden_size"}), "'hidden_size' is missing"},
      {Patched(kLlama2_7b, R"({"hidden_size": "4096"})"), "'hidden_size' must be an integer"},
      {Patched(kLlama2_7b, R"({"num_hidden_layers": 2.5})"), "'num_hidden_layers' must be an integer"},
      {Patched(kLlama2_7b, R"({"rms_norm_eps": "small"})"), "'rms_norm_eps' must be a number"},
      {Patched(kLlama2_7b, R"({"tie_word_embeddings": 1})"), "'tie_word_embeddings' must be true or false"},
      {Patched(kLlama2_7b, R"({"eos_token_id": [2, "x"]})"), "'eos_token_id' must be a token id"},
      {Patched(kLlama2_7b, R"({"eos_token_id": 32000})"), "eos token id 32000 is outside the vocabulary"},
      {Patched(kLlama2_7b, R"({"num_key_value_heads": 5})"), "num_kv_heads 5 does not divide num_heads 32"},
      {Patched(kLlama2_7b, R"({"hidden_act": "gelu"})"), "hidden_act 'gelu'"},
      {Patched(kLlama2_7b, R"({"rms_norm_eps": 0})"), "norm_eps"},
      {Patched(kLlama2_7b, R"({"vocab_size": -5})"), "vocab_size = -5"},
      {Patched(kLlama2_7b, R"({"rope_scaling": [1]})"), "'rope_scaling' must be an object"},
      {Patched(kLlama2_7b, R"({"head_dim": 127})"), "head_dim 127 must be even"},
      {WithNull(kOpt125m, {"ffn_dim"}), "'ffn_dim' is missing"},
  };
  for (const Case& c : cases) {
    const absl::Status status = ParseStatus(c.text);
    EXPECT_FALSE(status.ok()) << c.text;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << status;
    EXPECT_THAT(status.message(), HasSubstr("some/config.json")) << status;
  }
}

TEST(ModelConfigTest, ValidateCatchesInconsistencies) {
  ModelConfig c = Parse(kLlama31_8b);
  ASSERT_TRUE(c.Validate().ok());
  ModelConfig bad = c;
  bad.num_layers = 0;
  EXPECT_THAT(bad.Validate().message(), HasSubstr("num_layers"));
  bad = c;
  bad.model_type = "opt";
  EXPECT_FALSE(bad.Validate().ok());
  bad = c;
  bad.rope_scaling.high_freq_factor = bad.rope_scaling.low_freq_factor;
  EXPECT_FALSE(bad.Validate().ok());
  bad = c;
  bad.attention_qkv_bias = true;  // llama's attention_bias covers o_proj too
  EXPECT_FALSE(bad.Validate().ok());
  bad = c;
  bad.sliding_window = 128;  // only mistral has one
  EXPECT_FALSE(bad.Validate().ok());
  bad = c;
  bad.bos_token_id = static_cast<int32_t>(c.vocab_size);
  EXPECT_FALSE(bad.Validate().ok());

  ModelConfig opt = Parse(kOpt350m);
  ASSERT_TRUE(opt.Validate().ok());
  bad = opt;
  bad.num_kv_heads = 4;
  EXPECT_FALSE(bad.Validate().ok());
  bad = opt;
  bad.mlp_bias = false;
  EXPECT_FALSE(bad.Validate().ok());
  bad = opt;
  bad.word_embed_proj_dim = 0;
  EXPECT_FALSE(bad.Validate().ok());
}

TEST(ModelConfigTest, HfJsonRoundTrip) {
  for (const char* text : {kLlama2_7b, kLlama31_8b, kMistral7b, kQwen25_7b, kOpt125m, kOpt350m}) {
    const ModelConfig original = Parse(text);
    const std::string written = ToHfConfigJson(original, "bfloat16");
    SCOPED_TRACE(written);
    const ModelConfig reread = Parse(written);
    ExpectSameConfig(original, reread);
    const nlohmann::json j = nlohmann::json::parse(written);
    EXPECT_EQ(j["torch_dtype"], "bfloat16");
    EXPECT_EQ(j["model_type"], original.model_type);
    EXPECT_TRUE(j["architectures"].is_array());
  }
  // A linear-scaled config survives too, and 1e-5 is written as such.
  ModelConfig linear = Parse(Patched(kLlama2_7b, R"({"rope_scaling": {"type": "linear", "factor": 2.5}})"));
  const std::string written = ToHfConfigJson(linear);
  EXPECT_THAT(written, HasSubstr("1e-05"));
  ExpectSameConfig(linear, Parse(written));
}

}  // namespace
}  // namespace polar
