// ModelConfig: consistency checks, and conversion from/to Hugging Face
// config.json for the model types Polar runs (llama, mistral, qwen2, opt).
//
// Defaults for absent keys follow transformers' config classes, so a config
// that transformers accepts means the same thing here. Both spellings of RoPE
// settings are read: transformers 4.x's rope_theta + rope_scaling and 5.x's
// rope_parameters. The writer emits the 4.x spelling, which both versions read.
// Anything that would change the computation and that Polar does not implement
// (other activations, other rope scalings, Qwen2 sliding windows, ...) is an
// error naming the key, never silently ignored.
#include "engine/model/model_config.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace polar {
namespace {

using Json = nlohmann::json;

// Upper bound on every size, far above any real model, so products of two
// sizes (vocab * hidden, ...) cannot overflow int64.
constexpr int64_t kMaxSize = int64_t{1} << 30;

// Reads typed keys from one JSON object. The first error sticks and later
// reads return defaults, so a parser reads all keys and checks once.
class KeyReader {
 public:
  KeyReader(const Json& object, std::string source) : object_(object), source_(std::move(source)) {}

  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }
  void Fail(absl::Status status) {
    if (status_.ok()) status_ = std::move(status);
  }
  void Fail(const std::string& key, const std::string& what) {
    Fail(absl::InvalidArgumentError(absl::StrCat(source_, ": '", key, "' ", what)));
  }

  // True when the key is present and not null.
  bool Has(const std::string& key) const {
    auto it = object_.find(key);
    return it != object_.end() && !it->is_null();
  }
  const Json* Get(const std::string& key) const {
    auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  int64_t Int(const std::string& key) { return IntOr(key, std::nullopt); }
  int64_t IntOr(const std::string& key, std::optional<int64_t> fallback) {
    const Json* v = Get(key);
    if (v == nullptr) {
      if (!fallback) Fail(key, "is missing");
      return fallback.value_or(0);
    }
    if (v->is_number_unsigned()) {
      if (v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        Fail(key, "is out of range");
        return 0;
      }
      return static_cast<int64_t>(v->get<uint64_t>());
    }
    if (v->is_number_integer()) return v->get<int64_t>();
    // Some configs write integers as 4096.0.
    if (v->is_number_float()) {
      const double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
    }
    Fail(key, absl::StrCat("must be an integer, found ", v->dump()));
    return 0;
  }

  double Float(const std::string& key) { return FloatOr(key, std::nullopt); }
  double FloatOr(const std::string& key, std::optional<double> fallback) {
    const Json* v = Get(key);
    if (v == nullptr) {
      if (!fallback) Fail(key, "is missing");
      return fallback.value_or(0.0);
    }
    if (!v->is_number()) {
      Fail(key, absl::StrCat("must be a number, found ", v->dump()));
      return 0.0;
    }
    return v->get<double>();
  }

  bool BoolOr(const std::string& key, bool fallback) {
    const Json* v = Get(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) {
      Fail(key, absl::StrCat("must be true or false, found ", v->dump()));
      return fallback;
    }
    return v->get<bool>();
  }

  std::string StringOr(const std::string& key, const std::string& fallback) {
    const Json* v = Get(key);
    if (v == nullptr) return fallback;
    if (!v->is_string()) {
      Fail(key, absl::StrCat("must be a string, found ", v->dump()));
      return fallback;
    }
    return v->get<std::string>();
  }

  // A token id or a list of them; null or absent gives `fallback`.
  std::vector<int32_t> TokenIds(const std::string& key, std::vector<int32_t> fallback) {
    auto it = object_.find(key);
    if (it == object_.end()) return fallback;
    if (it->is_null()) return {};
    std::vector<int32_t> ids;
    const auto add = [&](const Json& v) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        Fail(key, absl::StrCat("must be a token id or a list of them, found ", it->dump()));
        return;
      }
      ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    };
    if (it->is_array()) {
      for (const Json& v : *it) add(v);
    } else {
      add(*it);
    }
    return ids;
  }

 private:
  const Json& object_;
  std::string source_;  // a copy: callers pass temporaries like "file: key"
  absl::Status status_;
};

// The shortest decimal that reads back as the same float, as a double, so
// 1e-5f is written "1e-05" rather than "9.99999974737875e-06".
double FloatForJson(float value) {
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer) - 1, value);
  if (ec != std::errc()) return value;
  *end = '\0';
  return std::strtod(buffer, nullptr);
}

// Reads rope_scaling (4.x) or rope_parameters (5.x) into `config`.
void ParseRope(KeyReader& r, const std::string& source, ModelConfig& c) {
  const Json* params = r.Get("rope_parameters");
  const Json* scaling = r.Get("rope_scaling");
  c.rope_theta = static_cast<float>(r.FloatOr("rope_theta", 10000.0));
  const Json* spec = params != nullptr ? params : scaling;
  if (spec == nullptr) return;
  const std::string key = params != nullptr ? "rope_parameters" : "rope_scaling";
  if (!spec->is_object()) {
    r.Fail(key, absl::StrCat("must be an object, found ", spec->dump()));
    return;
  }
  KeyReader s(*spec, absl::StrCat(source, ": ", key));
  if (params != nullptr && s.Has("rope_theta")) c.rope_theta = static_cast<float>(s.Float("rope_theta"));
  std::string type = s.StringOr("rope_type", s.StringOr("type", params != nullptr ? "default" : ""));
  if (type == "default") {
    if (!s.Has("rope_theta") && params != nullptr && !s.Has("rope_type")) {
      // 5.x also allows one rope_parameters object per attention type
      // ({"full_attention": {...}, ...}); no model Polar runs uses that.
      r.Fail(key, "has no rope_type or rope_theta (per-layer-type RoPE is not supported)");
    }
  } else if (type == "linear") {
    c.rope_scaling.type = RopeScalingType::kLinear;
    c.rope_scaling.factor = static_cast<float>(s.Float("factor"));
  } else if (type == "llama3") {
    c.rope_scaling.type = RopeScalingType::kLlama3;
    c.rope_scaling.factor = static_cast<float>(s.Float("factor"));
    c.rope_scaling.low_freq_factor = static_cast<float>(s.Float("low_freq_factor"));
    c.rope_scaling.high_freq_factor = static_cast<float>(s.Float("high_freq_factor"));
    c.rope_scaling.original_max_position_embeddings = s.Int("original_max_position_embeddings");
  } else {
    r.Fail(absl::UnimplementedError(absl::StrCat(source, ": ", key, " type '", type,
                                                 "' is not supported (supported: default, linear, llama3)")));
  }
  if (!s.ok()) r.Fail(s.status());
}

void ParseLlamaFamily(KeyReader& r, const Json& object, const std::string& source, ModelConfig& c) {
  const std::string& type = c.model_type;
  c.family = ArchFamily::kLlama;
  c.vocab_size = r.Int("vocab_size");
  c.hidden_size = r.Int("hidden_size");
  c.intermediate_size = r.Int("intermediate_size");
  c.num_layers = r.Int("num_hidden_layers");
  c.num_heads = r.Int("num_attention_heads");
  c.num_kv_heads = r.IntOr("num_key_value_heads", c.num_heads);
  if (r.Has("head_dim")) {
    c.head_dim = r.Int("head_dim");
  } else if (c.num_heads > 0) {
    if (c.hidden_size % c.num_heads != 0) r.Fail("num_attention_heads", "does not divide hidden_size");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  const int64_t default_max_positions = type == "llama" ? 2048 : (type == "mistral" ? 4096 * 32 : 32768);
  c.max_position_embeddings = r.IntOr("max_position_embeddings", default_max_positions);
  c.norm_eps = static_cast<float>(r.FloatOr("rms_norm_eps", 1e-6));
  ParseRope(r, source, c);

  const std::string act = r.StringOr("hidden_act", "silu");
  if (act != "silu") {
    r.Fail(absl::UnimplementedError(absl::StrCat(source, ": hidden_act '", act, "' is not supported (silu only)")));
  }
  c.tie_word_embeddings = r.BoolOr("tie_word_embeddings", false);
  if (type == "llama") {
    // LlamaConfig.attention_bias puts biases on q, k, v and o alike.
    c.attention_qkv_bias = c.attention_out_bias = r.BoolOr("attention_bias", false);
    c.mlp_bias = r.BoolOr("mlp_bias", false);
  } else if (type == "qwen2") {
    c.attention_qkv_bias = true;
  }
  if (type == "mistral") {
    // MistralConfig defaults to a 4096 window; null means full attention.
    auto it = object.find("sliding_window");
    c.sliding_window = it == object.end() ? 4096 : r.IntOr("sliding_window", 0);
  } else if (type == "qwen2") {
    // Qwen2 applies its window only to some layers, and only when asked.
    if (r.BoolOr("use_sliding_window", false)) {
      r.Fail(absl::UnimplementedError(absl::StrCat(source, ": use_sliding_window=true is not supported for qwen2")));
    }
    if (const Json* layers = r.Get("layer_types"); layers != nullptr && layers->is_array()) {
      for (const Json& layer : *layers) {
        if (layer != "full_attention") {
          r.Fail(absl::UnimplementedError(
              absl::StrCat(source, ": layer_types other than full_attention are not supported")));
          break;
        }
      }
    }
  }
  const bool mistral_or_llama = type != "qwen2";
  c.bos_token_id = -1;
  const auto bos = r.TokenIds("bos_token_id", mistral_or_llama ? std::vector<int32_t>{1} : std::vector<int32_t>{});
  if (bos.size() > 1) r.Fail("bos_token_id", "must be a single token id");
  if (!bos.empty()) c.bos_token_id = bos[0];
  c.eos_token_ids = r.TokenIds("eos_token_id", mistral_or_llama ? std::vector<int32_t>{2} : std::vector<int32_t>{});
}

void ParseOpt(KeyReader& r, const std::string& source, ModelConfig& c) {
  c.family = ArchFamily::kOpt;
  c.vocab_size = r.Int("vocab_size");
  c.hidden_size = r.Int("hidden_size");
  c.intermediate_size = r.Int("ffn_dim");
  c.num_layers = r.Int("num_hidden_layers");
  c.num_heads = r.Int("num_attention_heads");
  c.num_kv_heads = c.num_heads;
  if (c.num_heads > 0) {
    if (c.hidden_size % c.num_heads != 0) r.Fail("num_attention_heads", "does not divide hidden_size");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  c.max_position_embeddings = r.Int("max_position_embeddings");
  c.word_embed_proj_dim = r.IntOr("word_embed_proj_dim", c.hidden_size);
  c.do_layer_norm_before = r.BoolOr("do_layer_norm_before", true);
  const bool bias = r.BoolOr("enable_bias", true);
  c.attention_qkv_bias = c.attention_out_bias = c.mlp_bias = bias;
  c.norm_eps = 1e-5f;  // OPT's nn.LayerNorm default; not a config key
  c.position_offset = 2;
  c.tie_word_embeddings = r.BoolOr("tie_word_embeddings", true);
  const std::string act = r.StringOr("activation_function", "relu");
  if (act != "relu") {
    r.Fail(absl::UnimplementedError(
        absl::StrCat(source, ": activation_function '", act, "' is not supported (OPT runs with relu)")));
  }
  if (!r.BoolOr("layer_norm_elementwise_affine", true)) {
    r.Fail(absl::UnimplementedError(absl::StrCat(source, ": layer_norm_elementwise_affine=false is not supported")));
  }
  if (r.BoolOr("_remove_final_layer_norm", false) && c.do_layer_norm_before) {
    r.Fail(absl::UnimplementedError(absl::StrCat(source, ": _remove_final_layer_norm=true is not supported")));
  }
  const auto bos = r.TokenIds("bos_token_id", {2});
  if (bos.size() > 1) r.Fail("bos_token_id", "must be a single token id");
  c.bos_token_id = bos.empty() ? -1 : bos[0];
  c.eos_token_ids = r.TokenIds("eos_token_id", {2});
}

}  // namespace

absl::Status ModelConfig::Validate() const {
  const auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("model config (", model_type, "): ", what));
  };
  const bool llama_type = model_type == "llama" || model_type == "mistral" || model_type == "qwen2";
  if (family == ArchFamily::kLlama && !llama_type) {
    return error("model_type must be llama, mistral or qwen2 for the llama family");
  }
  if (family == ArchFamily::kOpt && model_type != "opt") return error("model_type must be opt for the OPT family");

  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", vocab_size},   {"hidden_size", hidden_size}, {"intermediate_size", intermediate_size},
      {"num_layers", num_layers},   {"num_heads", num_heads},     {"num_kv_heads", num_kv_heads},
      {"head_dim", head_dim},       {"max_position_embeddings", max_position_embeddings},
  };
  for (const auto& [name, value] : sizes) {
    if (value <= 0 || value > kMaxSize) return error(absl::StrCat(name, " = ", value, " is out of range"));
  }
  if (num_heads % num_kv_heads != 0) {
    return error(absl::StrCat("num_kv_heads ", num_kv_heads, " does not divide num_heads ", num_heads));
  }
  if (q_dim() > kMaxSize) return error("num_heads * head_dim is out of range");
  if (!(norm_eps > 0.0f) || !std::isfinite(norm_eps)) return error(absl::StrCat("norm_eps = ", norm_eps));
  if (sliding_window < 0) return error(absl::StrCat("sliding_window = ", sliding_window));
  if (bos_token_id < -1 || bos_token_id >= vocab_size) {
    return error(absl::StrCat("bos_token_id ", bos_token_id, " is outside the vocabulary of ", vocab_size));
  }
  for (int32_t id : eos_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return error(absl::StrCat("eos token id ", id, " is outside the vocabulary of ", vocab_size));
    }
  }

  if (family == ArchFamily::kLlama) {
    if (head_dim % 2 != 0) return error(absl::StrCat("head_dim ", head_dim, " must be even for RoPE"));
    if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta)) return error(absl::StrCat("rope_theta = ", rope_theta));
    if (rope_scaling.type != RopeScalingType::kNone &&
        (!(rope_scaling.factor > 0.0f) || !std::isfinite(rope_scaling.factor))) {
      return error(absl::StrCat("rope scaling factor = ", rope_scaling.factor));
    }
    if (rope_scaling.type == RopeScalingType::kLlama3) {
      // The smoothing step divides by (high - low) and by the wavelength bounds.
      if (!(rope_scaling.low_freq_factor > 0.0f) ||
          !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor) ||
          !std::isfinite(rope_scaling.high_freq_factor) || rope_scaling.original_max_position_embeddings <= 0) {
        return error("llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor and "
                     "original_max_position_embeddings > 0");
      }
    }
    if (model_type == "qwen2" && (!attention_qkv_bias || attention_out_bias || mlp_bias)) {
      return error("qwen2 has biases on q, k, v only");
    }
    if (model_type == "mistral" && (attention_qkv_bias || attention_out_bias || mlp_bias)) {
      return error("mistral has no biases");
    }
    if (model_type == "llama" && attention_qkv_bias != attention_out_bias) {
      return error("llama's attention_bias covers q, k, v and o together");
    }
    if (sliding_window != 0 && model_type != "mistral") return error("only mistral has a sliding window");
    if (word_embed_proj_dim != 0 && word_embed_proj_dim != hidden_size) {
      return error("word_embed_proj_dim is an OPT setting");
    }
  } else {
    if (num_kv_heads != num_heads || head_dim * num_heads != hidden_size) {
      return error("OPT needs num_kv_heads == num_heads and head_dim * num_heads == hidden_size");
    }
    if (word_embed_proj_dim <= 0 || word_embed_proj_dim > kMaxSize) {
      return error(absl::StrCat("word_embed_proj_dim = ", word_embed_proj_dim));
    }
    if (attention_qkv_bias != attention_out_bias || attention_qkv_bias != mlp_bias) {
      return error("OPT's enable_bias covers every projection together");
    }
    if (position_offset < 0 || position_offset > 1024) return error(absl::StrCat("position_offset = ", position_offset));
    if (rope_scaling.type != RopeScalingType::kNone || sliding_window != 0) {
      return error("OPT has no RoPE and no sliding window");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseHfConfig(const std::string& json_text, const std::string& source) {
  const Json object = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!object.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  KeyReader r(object, source);
  ModelConfig config;
  config.model_type = r.StringOr("model_type", "");
  if (!r.ok()) return r.status();
  if (config.model_type == "llama" || config.model_type == "mistral" || config.model_type == "qwen2") {
    ParseLlamaFamily(r, object, source, config);
  } else if (config.model_type == "opt") {
    ParseOpt(r, source, config);
  } else if (config.model_type.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": 'model_type' is missing"));
  } else {
    return absl::UnimplementedError(absl::StrCat(source, ": model_type '", config.model_type,
                                                 "' is not supported (llama, mistral, qwen2, opt)"));
  }
  if (!r.ok()) return r.status();
  if (auto status = config.Validate(); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", status.message()));
  }
  return config;
}

std::string ToHfConfigJson(const ModelConfig& config) { return ToHfConfigJson(config, "float32"); }

std::string ToHfConfigJson(const ModelConfig& c, const std::string& torch_dtype) {
  Json j = Json::object();
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  j["bos_token_id"] = c.bos_token_id >= 0 ? Json(c.bos_token_id) : Json(nullptr);
  if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["use_cache"] = true;

  if (c.family == ArchFamily::kOpt) {
    j["architectures"] = {"OPTForCausalLM"};
    j["ffn_dim"] = c.intermediate_size;
    j["word_embed_proj_dim"] = c.word_embed_proj_dim;
    j["do_layer_norm_before"] = c.do_layer_norm_before;
    j["enable_bias"] = c.mlp_bias;
    j["activation_function"] = "relu";
    j["layer_norm_elementwise_affine"] = true;
    j["_remove_final_layer_norm"] = false;
    j["pad_token_id"] = 1;
    j["dropout"] = 0.0;
    j["attention_dropout"] = 0.0;
    j["activation_dropout"] = 0.0;
    j["layerdrop"] = 0.0;
    return j.dump(2) + "\n";
  }

  const char* architecture = c.model_type == "mistral" ? "MistralForCausalLM"
                             : c.model_type == "qwen2" ? "Qwen2ForCausalLM"
                                                       : "LlamaForCausalLM";
  j["architectures"] = {architecture};
  j["intermediate_size"] = c.intermediate_size;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = FloatForJson(c.norm_eps);
  j["rope_theta"] = FloatForJson(c.rope_theta);
  j["attention_dropout"] = 0.0;
  switch (c.rope_scaling.type) {
    case RopeScalingType::kNone:
      j["rope_scaling"] = nullptr;
      break;
    case RopeScalingType::kLinear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", FloatForJson(c.rope_scaling.factor)}};
      break;
    case RopeScalingType::kLlama3:
      j["rope_scaling"] = {
          {"rope_type", "llama3"},
          {"factor", FloatForJson(c.rope_scaling.factor)},
          {"low_freq_factor", FloatForJson(c.rope_scaling.low_freq_factor)},
          {"high_freq_factor", FloatForJson(c.rope_scaling.high_freq_factor)},
          {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings},
      };
      break;
  }
  if (c.model_type == "llama") {
    j["attention_bias"] = c.attention_qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  } else if (c.model_type == "mistral") {
    j["sliding_window"] = c.sliding_window > 0 ? Json(c.sliding_window) : Json(nullptr);
  } else if (c.model_type == "qwen2") {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = c.num_layers;
  }
  return j.dump(2) + "\n";
}

}  // namespace polar
