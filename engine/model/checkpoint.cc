// Opening checkpoints (GGUF file or Hugging Face directory) into one form:
// a ModelConfig plus tensors under their Hugging Face names and layouts.
//
// GGUF: llama.cpp's converter renames tensors (blk.N.attn_q, ...) and, for the
// llama architecture, permutes the rows of q_proj/k_proj so that each head's
// rotary pairs are adjacent (GGML's "normal" RoPE) instead of split in halves
// (Hugging Face's rotate_half). Both are undone here, so the model code has
// one layout to serve. qwen2 GGUFs use NEOX RoPE and are not permuted.
//
// Hugging Face: older checkpoints name tensors without the "model." prefix
// (OPT saved from OPTModel: "decoder.layers.0..."; LlamaModel: "layers.0...");
// names are normalized to the prefixed form.
//
// Every tensor the architecture needs is then checked for presence, shape and
// byte size (ValidateTensors); extra tensors (rotary inv_freq, ...) are kept
// but ignored.
#include "engine/model/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/safetensors_file.h"
#include "engine/model/text_file.h"
#include "engine/model/synth.h"

namespace polar {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

// GGUF per-block tensor stems and their Hugging Face module paths.
constexpr std::pair<const char*, const char*> kBlockNames[] = {
    {"attn_q", "self_attn.q_proj"},      {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},      {"attn_output", "self_attn.o_proj"},
    {"attn_norm", "input_layernorm"},    {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},       {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
};

// Reads GGUF metadata keys with a sticky first error (see KeyReader in
// model_config.cc): read everything, check once.
class GgufKeys {
 public:
  explicit GgufKeys(const GgufFile& gguf) : gguf_(gguf) {}
  const absl::Status& status() const { return status_; }

  int64_t Int(const std::string& key) {
    auto v = gguf_.GetInt(key);
    return Take(std::move(v), int64_t{0});
  }
  int64_t IntOr(const std::string& key, int64_t fallback) { return gguf_.Has(key) ? Int(key) : fallback; }
  double Float(const std::string& key) { return Take(gguf_.GetFloat(key), 0.0); }
  double FloatOr(const std::string& key, double fallback) { return gguf_.Has(key) ? Float(key) : fallback; }
  std::string StringOr(const std::string& key, const std::string& fallback) {
    return gguf_.Has(key) ? Take(gguf_.GetString(key), fallback) : fallback;
  }
  void Fail(absl::Status status) {
    if (status_.ok()) status_ = std::move(status);
  }

 private:
  template <typename T>
  T Take(absl::StatusOr<T> value, T fallback) {
    if (!value.ok()) {
      Fail(value.status());
      return fallback;
    }
    return *std::move(value);
  }
  const GgufFile& gguf_;
  absl::Status status_;
};

// Older checkpoints saved from the bare decoder lack the "model." prefix.
std::string NormalizeHfName(const ModelConfig& config, const std::string& name) {
  if (config.family == ArchFamily::kOpt) {
    if (absl::StartsWith(name, "decoder.")) return "model." + name;
  } else if (absl::StartsWith(name, "layers.") || absl::StartsWith(name, "embed_tokens.") ||
             absl::StartsWith(name, "norm.")) {
    return "model." + name;
  }
  return name;
}

std::string Describe(const ModelConfig& c) {
  return absl::StrCat(c.model_type, ", ", c.num_layers, " layers, hidden ", c.hidden_size);
}

absl::StatusOr<Checkpoint> OpenHfDirectory(const std::string& dir) {
  const std::string config_path = JoinPath(dir, "config.json");
  auto text = ReadTextFile(config_path);
  if (!text.ok()) return text.status();
  auto config = ParseHfConfig(*text, config_path);
  if (!config.ok()) return config.status();
  auto tensors = ReadSafetensorsDir(dir);
  if (!tensors.ok()) return tensors.status();

  Checkpoint checkpoint;
  checkpoint.path = dir;
  checkpoint.format = "safetensors";
  checkpoint.config = *std::move(config);
  for (auto& [name, tensor] : *tensors) {
    std::string normalized = NormalizeHfName(checkpoint.config, name);
    tensor.name = normalized;
    if (!checkpoint.tensors.emplace(normalized, std::move(tensor)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, ": tensor '", normalized, "' appears both with and without the 'model.' prefix"));
    }
  }
  std::error_code ec;
  const std::string tokenizer_path = JoinPath(dir, "tokenizer.json");
  if (std::filesystem::is_regular_file(tokenizer_path, ec)) checkpoint.tokenizer_json_path = tokenizer_path;
  if (auto status = ValidateTensors(checkpoint); !status.ok()) return status;
  return checkpoint;
}

}  // namespace

const HostTensor* Checkpoint::Find(const std::string& name) const {
  auto it = tensors.find(name);
  return it == tensors.end() ? nullptr : &it->second;
}

absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& gguf) {
  auto arch_or = gguf.GetString("general.architecture");
  if (!arch_or.ok()) return arch_or.status();
  const std::string arch = *arch_or;
  if (arch != "llama" && arch != "mistral" && arch != "qwen2") {
    return absl::UnimplementedError(absl::StrCat(gguf.source(), ": general.architecture '", arch,
                                                 "' is not supported (llama, mistral, qwen2)"));
  }
  const auto key = [&](const char* suffix) { return absl::StrCat(arch, ".", suffix); };
  const auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(gguf.source(), ": ", what));
  };
  GgufKeys k(gguf);
  ModelConfig c;
  c.family = ArchFamily::kLlama;
  c.model_type = arch;
  c.num_layers = k.Int(key("block_count"));
  c.hidden_size = k.Int(key("embedding_length"));
  c.intermediate_size = k.Int(key("feed_forward_length"));
  c.num_heads = k.Int(key("attention.head_count"));
  c.num_kv_heads = k.IntOr(key("attention.head_count_kv"), c.num_heads);
  c.max_position_embeddings = k.Int(key("context_length"));
  c.rope_theta = static_cast<float>(k.FloatOr(key("rope.freq_base"), 10000.0));
  c.norm_eps = static_cast<float>(k.Float(key("attention.layer_norm_rms_epsilon")));
  if (gguf.Has(key("vocab_size"))) {
    c.vocab_size = k.Int(key("vocab_size"));
  } else if (const GgufValue* tokens = gguf.Find("tokenizer.ggml.tokens")) {
    if (const auto* list = std::get_if<std::vector<std::string>>(tokens)) c.vocab_size = list->size();
  }
  if (!k.status().ok()) return k.status();
  if (c.vocab_size <= 0) return error(absl::StrCat("no ", key("vocab_size"), " and no tokenizer.ggml.tokens"));
  if (c.num_heads <= 0 || c.hidden_size <= 0) return error("head_count and embedding_length must be positive");

  // key_length is the per-head Q/K width when it is not hidden / heads.
  if (gguf.Has(key("attention.key_length"))) {
    c.head_dim = k.Int(key("attention.key_length"));
    const int64_t value_length = k.IntOr(key("attention.value_length"), c.head_dim);
    if (value_length != c.head_dim) return error("attention.value_length != key_length is not supported");
  } else {
    if (c.hidden_size % c.num_heads != 0) return error("head_count does not divide embedding_length");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  const int64_t rope_dims = k.IntOr(key("rope.dimension_count"), c.head_dim);
  if (rope_dims != c.head_dim) {
    return absl::UnimplementedError(absl::StrCat(gguf.source(), ": ", key("rope.dimension_count"), " = ", rope_dims,
                                                 " (partial rotary) is not supported; head_dim is ", c.head_dim));
  }

  const std::string scaling = k.StringOr(key("rope.scaling.type"), "none");
  if (scaling == "linear") {
    c.rope_scaling.type = RopeScalingType::kLinear;
    c.rope_scaling.factor = static_cast<float>(k.Float(key("rope.scaling.factor")));
  } else if (scaling != "none") {
    return absl::UnimplementedError(
        absl::StrCat(gguf.source(), ": ", key("rope.scaling.type"), " '", scaling, "' is not supported"));
  }
  if (const double scale = k.FloatOr(key("rope.scale_linear"), 1.0); scale != 1.0) {  // older spelling
    c.rope_scaling.type = RopeScalingType::kLinear;
    c.rope_scaling.factor = static_cast<float>(scale);
  }
  // LLaMA-3.1 GGUFs carry their rope scaling as a precomputed per-frequency
  // factor tensor rather than metadata.
  if (gguf.FindTensor("rope_freqs.weight") != nullptr) {
    absl::StatusOr<HostTensor> freqs = gguf.Tensor("rope_freqs.weight");
    absl::StatusOr<std::vector<float>> factors =
        freqs.ok() ? ToF32(*freqs) : absl::StatusOr<std::vector<float>>(freqs.status());
    if (!factors.ok()) return factors.status();
    if (static_cast<int64_t>(factors->size()) != c.head_dim / 2) {
      return absl::InvalidArgumentError(absl::StrCat(gguf.source(), ": rope_freqs.weight has ", factors->size(),
                                                     " values, expected head_dim / 2 = ", c.head_dim / 2));
    }
    for (float f : *factors) {
      if (!(f > 0.0f) || !std::isfinite(f)) {
        return absl::InvalidArgumentError(absl::StrCat(gguf.source(), ": rope_freqs.weight holds ", f,
                                                       "; factors must be positive and finite"));
      }
    }
    c.rope_freq_factors = std::move(*factors);
  }
  if (gguf.Has(key("attention.sliding_window"))) {
    c.sliding_window = k.Int(key("attention.sliding_window"));
    // Mistral is llama plus a sliding window; that is how Polar tells them apart.
    if (c.sliding_window > 0 && c.model_type == "llama") c.model_type = "mistral";
  }

  c.attention_qkv_bias = gguf.FindTensor("blk.0.attn_q.bias") != nullptr;
  c.attention_out_bias = gguf.FindTensor("blk.0.attn_output.bias") != nullptr;
  c.mlp_bias = gguf.FindTensor("blk.0.ffn_up.bias") != nullptr;
  c.tie_word_embeddings = gguf.FindTensor("output.weight") == nullptr;

  c.bos_token_id = static_cast<int32_t>(k.IntOr("tokenizer.ggml.bos_token_id", -1));
  // Generation ends at any end-of-generation token, as in llama.cpp.
  for (const char* name : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (!gguf.Has(name)) continue;
    const int64_t id = k.Int(name);
    if (id < 0 || id > INT32_MAX) return error(absl::StrCat(name, " = ", id, " is out of range"));
    if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end()) {
      c.eos_token_ids.push_back(static_cast<int32_t>(id));
    }
  }
  if (!k.status().ok()) return k.status();
  if (auto status = c.Validate(); !status.ok()) return error(std::string(status.message()));
  return c;
}

std::string HfNameForGgufTensor(const std::string& gguf_name) {
  if (gguf_name == "token_embd.weight") return "model.embed_tokens.weight";
  if (gguf_name == "output_norm.weight") return "model.norm.weight";
  if (gguf_name == "output.weight") return "lm_head.weight";
  // blk.<N>.<stem>.<weight|bias>
  if (!absl::StartsWith(gguf_name, "blk.")) return "";
  const size_t layer_end = gguf_name.find('.', 4);
  if (layer_end == std::string::npos) return "";
  int64_t layer = 0;
  const std::string layer_text = gguf_name.substr(4, layer_end - 4);
  if (layer_text.empty() || layer_text.size() > 6 || !absl::SimpleAtoi(layer_text, &layer) || layer < 0 ||
      std::to_string(layer) != layer_text) {
    return "";
  }
  const size_t stem_end = gguf_name.rfind('.');
  if (stem_end <= layer_end) return "";
  const std::string stem = gguf_name.substr(layer_end + 1, stem_end - layer_end - 1);
  const std::string kind = gguf_name.substr(stem_end + 1);
  if (kind != "weight" && kind != "bias") return "";
  for (const auto& [gguf_stem, hf_module] : kBlockNames) {
    if (stem == gguf_stem) return absl::StrCat("model.layers.", layer, ".", hf_module, ".", kind);
  }
  return "";
}

absl::StatusOr<HostTensor> UnpermuteGgufQkRows(const HostTensor& tensor, int64_t n_head) {
  const auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' (", std::string(DTypeName(tensor.dtype)),
                                                   " ", ShapeString(tensor.shape), "): ", what));
  };
  if (tensor.shape.empty() || tensor.shape.size() > 2) return error("expected a weight or a bias");
  const int64_t rows = tensor.shape[0];
  const int64_t row_elements = tensor.shape.size() == 2 ? tensor.shape[1] : 1;
  if (n_head <= 0 || rows <= 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0) {
    return error(absl::StrCat("rows are not ", n_head, " heads of an even size"));
  }
  const int64_t block_elements = DTypeBlockElements(tensor.dtype);
  const int64_t block_bytes = DTypeBlockBytes(tensor.dtype);
  if (block_elements <= 0 || row_elements < 0 || row_elements % block_elements != 0) {
    return error("rows are not whole blocks of the dtype");
  }
  const int64_t row_bytes = row_elements / block_elements * block_bytes;
  int64_t total = 0;
  if (__builtin_mul_overflow(rows, row_bytes, &total) || total != tensor.nbytes || tensor.data == nullptr) {
    return error(absl::StrCat("holds ", tensor.nbytes, " bytes, expected ", rows, " rows of ", row_bytes));
  }
  const int64_t head_dim = rows / n_head;
  const int64_t half = head_dim / 2;
  auto storage = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(total));
  // GGUF row h*hd + 2i + s holds Hugging Face row h*hd + s*hd/2 + i.
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t s = 0; s < 2; ++s) {
        const int64_t gguf_row = h * head_dim + 2 * i + s;
        const int64_t hf_row = h * head_dim + s * half + i;
        std::memcpy(storage->data() + hf_row * row_bytes, tensor.data + gguf_row * row_bytes, row_bytes);
      }
    }
  }
  HostTensor out = tensor;
  out.data = storage->data();
  out.keep_alive = std::move(storage);
  return out;
}

absl::StatusOr<Checkpoint> CheckpointFromGguf(std::shared_ptr<const GgufFile> gguf) {
  auto config = ConfigFromGguf(*gguf);
  if (!config.ok()) return config.status();
  Checkpoint checkpoint;
  checkpoint.path = gguf->source();
  checkpoint.format = "gguf";
  checkpoint.config = *std::move(config);
  // llama.cpp permutes Q/K only for the llama architecture (mistral included).
  const bool permuted = checkpoint.config.model_type != "qwen2";
  for (const GgufTensorInfo& info : gguf->tensors()) {
    auto tensor = gguf->Tensor(info.name);
    if (!tensor.ok()) return tensor.status();
    std::string name = HfNameForGgufTensor(info.name);
    if (name.empty()) name = info.name;  // kept, unused: validation ignores extras
    if (permuted) {
      const bool is_q = absl::StrContains(name, ".self_attn.q_proj.");
      const bool is_k = absl::StrContains(name, ".self_attn.k_proj.");
      if (is_q || is_k) {
        auto fixed = UnpermuteGgufQkRows(
            *tensor, is_q ? checkpoint.config.num_heads : checkpoint.config.num_kv_heads);
        if (!fixed.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(gguf->source(), ": ", fixed.status().message()));
        }
        tensor = *std::move(fixed);
      }
    }
    tensor->name = name;
    if (!checkpoint.tensors.emplace(name, *std::move(tensor)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(gguf->source(), ": two tensors map to '", name, "' (second: '", info.name, "')"));
    }
  }
  checkpoint.gguf = std::move(gguf);
  if (auto status = ValidateTensors(checkpoint); !status.ok()) return status;
  return checkpoint;
}

absl::StatusOr<Checkpoint> OpenCheckpoint(const std::string& path) {
  // "synth:PRESET" builds random weights in memory (fp32, seed 0), so a
  // benchmark of a 7B shape never needs its 16 GB file.
  if (path.rfind(kSynthPrefix, 0) == 0) {
    absl::StatusOr<ModelConfig> config = SynthPresetConfig(path.substr(sizeof(kSynthPrefix) - 1));
    if (!config.ok()) return config.status();
    return SynthesizeCheckpoint(*config, /*seed=*/0, DType::kF32);
  }
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  }
  if (std::filesystem::is_directory(status)) return OpenHfDirectory(path);
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a .gguf file or a model directory"));
  }
  // A GGUF is recognized by its magic, whatever the file is called.
  char magic[4] = {};
  {
    std::ifstream in(path, std::ios::binary);
    in.read(magic, 4);
  }
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a GGUF file (no GGUF magic); for safetensors pass the model directory"));
  }
  auto gguf = GgufFile::Open(path);
  if (!gguf.ok()) return gguf.status();
  return CheckpointFromGguf(*std::move(gguf));
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors(const ModelConfig& c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  const int64_t h = c.hidden_size;
  if (c.family == ArchFamily::kLlama) {
    out.push_back({"model.embed_tokens.weight", {c.vocab_size, h}});
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      out.push_back({p + "input_layernorm.weight", {h}});
      out.push_back({p + "self_attn.q_proj.weight", {c.q_dim(), h}});
      out.push_back({p + "self_attn.k_proj.weight", {c.kv_dim(), h}});
      out.push_back({p + "self_attn.v_proj.weight", {c.kv_dim(), h}});
      if (c.attention_qkv_bias) {
        out.push_back({p + "self_attn.q_proj.bias", {c.q_dim()}});
        out.push_back({p + "self_attn.k_proj.bias", {c.kv_dim()}});
        out.push_back({p + "self_attn.v_proj.bias", {c.kv_dim()}});
      }
      out.push_back({p + "self_attn.o_proj.weight", {h, c.q_dim()}});
      if (c.attention_out_bias) out.push_back({p + "self_attn.o_proj.bias", {h}});
      out.push_back({p + "post_attention_layernorm.weight", {h}});
      out.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, h}});
      out.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, h}});
      out.push_back({p + "mlp.down_proj.weight", {h, c.intermediate_size}});
      if (c.mlp_bias) {
        out.push_back({p + "mlp.gate_proj.bias", {c.intermediate_size}});
        out.push_back({p + "mlp.up_proj.bias", {c.intermediate_size}});
        out.push_back({p + "mlp.down_proj.bias", {h}});
      }
    }
    out.push_back({"model.norm.weight", {h}});
    if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
    return out;
  }

  // OPT (transformers' OPTDecoder): token embeddings live in word_embed_proj_dim,
  // positions in hidden_size, with project_in/out between them when they differ.
  const int64_t e = c.word_embed_proj_dim;
  out.push_back({"model.decoder.embed_tokens.weight", {c.vocab_size, e}});
  out.push_back({"model.decoder.embed_positions.weight", {c.max_position_embeddings + c.position_offset, h}});
  if (e != h) {
    out.push_back({"model.decoder.project_in.weight", {h, e}});
    out.push_back({"model.decoder.project_out.weight", {e, h}});
  }
  // Post-LN OPT (opt-350m) has no final layer norm.
  if (c.do_layer_norm_before) {
    out.push_back({"model.decoder.final_layer_norm.weight", {h}});
    out.push_back({"model.decoder.final_layer_norm.bias", {h}});
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.decoder.layers.", l, ".");
    for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
      out.push_back({absl::StrCat(p, "self_attn.", proj, ".weight"), {h, h}});
      if (c.attention_qkv_bias) out.push_back({absl::StrCat(p, "self_attn.", proj, ".bias"), {h}});
    }
    out.push_back({p + "self_attn.out_proj.weight", {h, h}});
    if (c.attention_out_bias) out.push_back({p + "self_attn.out_proj.bias", {h}});
    out.push_back({p + "self_attn_layer_norm.weight", {h}});
    out.push_back({p + "self_attn_layer_norm.bias", {h}});
    out.push_back({p + "fc1.weight", {c.intermediate_size, h}});
    if (c.mlp_bias) out.push_back({p + "fc1.bias", {c.intermediate_size}});
    out.push_back({p + "fc2.weight", {h, c.intermediate_size}});
    if (c.mlp_bias) out.push_back({p + "fc2.bias", {h}});
    out.push_back({p + "final_layer_norm.weight", {h}});
    out.push_back({p + "final_layer_norm.bias", {h}});
  }
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, e}});
  return out;
}

absl::Status ValidateTensors(const Checkpoint& checkpoint) {
  const ModelConfig& config = checkpoint.config;
  if (auto status = config.Validate(); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(checkpoint.path, ": ", status.message()));
  }
  for (const auto& expected : ExpectedTensors(config)) {
    const std::string& name = expected.first;  // not a structured binding: lambdas capture it
    const std::vector<int64_t>& shape = expected.second;
    const HostTensor* tensor = checkpoint.Find(name);
    const auto error = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(checkpoint.path, ": tensor '", name, "' ", what,
                                                     " (model: ", Describe(config), ")"));
    };
    if (tensor == nullptr) return error(absl::StrCat("is missing; expected shape ", ShapeString(shape)));
    if (tensor->shape != shape) {
      return error(absl::StrCat("has shape ", ShapeString(tensor->shape), ", expected ", ShapeString(shape)));
    }
    // The loaders check sizes already; checked again because a checkpoint can
    // also be assembled by hand, and the backends trust these numbers.
    if (!IsSupportedDType(static_cast<uint32_t>(tensor->dtype))) {
      return error(absl::StrCat("has unsupported dtype id ", static_cast<uint32_t>(tensor->dtype)));
    }
    const int64_t block_elements = DTypeBlockElements(tensor->dtype);
    const int64_t row = shape.back();
    int64_t expected_bytes = 0;
    if (row % block_elements != 0 ||
        __builtin_mul_overflow(tensor->NumElements() / block_elements, DTypeBlockBytes(tensor->dtype),
                               &expected_bytes) ||
        expected_bytes != tensor->nbytes || (expected_bytes > 0 && tensor->data == nullptr)) {
      return error(absl::StrCat("holds ", tensor->nbytes, " bytes of ", std::string(DTypeName(tensor->dtype)),
                                ", which does not match its shape ", ShapeString(shape)));
    }
  }
  return absl::OkStatus();
}

}  // namespace polar
