// Synthetic model presets and random weights (see synth.h).
//
// The generator is counter-based: element i of a tensor is a pure function of
// (seed, FNV-1a of the tensor name, i): splitmix64's finalizer applied to the
// counter gives 64 random bits, whose four 16-bit quarters are summed
// (Irwin-Hall, n = 4) into an approximately normal value with unit variance
// and bounded tails. That is a few integer operations per element, so a 7B
// model fills in seconds on a many-core machine, and the result is the same
// whatever the thread count.
#include "engine/model/synth.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/model/safetensors_file.h"
#include "kernels/cpu/half.h"
#include "nlohmann/json.hpp"

namespace polar {
namespace {

using kernels::cpu::Fp32ToBf16;
using kernels::cpu::Fp32ToFp16;

// ---- presets ----------------------------------------------------------------

ModelConfig Llama(std::string type, int64_t vocab, int64_t hidden, int64_t ffn, int64_t layers, int64_t heads,
                  int64_t kv_heads, int64_t max_positions, float eps, float theta) {
  ModelConfig c;
  c.family = ArchFamily::kLlama;
  c.model_type = std::move(type);
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = ffn;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.max_position_embeddings = max_positions;
  c.norm_eps = eps;
  c.rope_theta = theta;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

ModelConfig Opt(int64_t vocab, int64_t hidden, int64_t ffn, int64_t layers, int64_t heads, int64_t max_positions) {
  ModelConfig c;
  c.family = ArchFamily::kOpt;
  c.model_type = "opt";
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = ffn;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = heads;
  c.head_dim = hidden / heads;
  c.max_position_embeddings = max_positions;
  c.word_embed_proj_dim = hidden;
  c.norm_eps = 1e-5f;
  c.attention_qkv_bias = c.attention_out_bias = c.mlp_bias = true;
  c.tie_word_embeddings = true;
  c.bos_token_id = 2;
  c.eos_token_ids = {2};
  return c;
}

RopeScaling Llama3Scaling(int64_t original_max_positions) {
  RopeScaling s;
  s.type = RopeScalingType::kLlama3;
  s.factor = 8.0f;
  s.low_freq_factor = 1.0f;
  s.high_freq_factor = 4.0f;
  s.original_max_position_embeddings = original_max_positions;
  return s;
}

// Name -> config, in the order SynthPresetNames lists them.
const std::vector<std::pair<std::string, ModelConfig>>& Presets() {
  static const auto* presets = [] {
    auto* p = new std::vector<std::pair<std::string, ModelConfig>>;
    // Tiny shapes for tests: GQA 2:1, head_dim 16, a vocabulary large enough
    // for byte-level test prompts.
    p->push_back({"tiny-llama", Llama("llama", 512, 64, 128, 2, 4, 2, 256, 1e-5f, 10000.0f)});
    {
      // LLaMA-3.1-style: tied embeddings, high theta, llama3 rope scaling whose
      // wavelength band (16..64 positions) falls inside head_dim 16's spectrum,
      // so low, high and smoothed frequencies all occur.
      ModelConfig c = Llama("llama", 512, 64, 128, 2, 4, 2, 512, 1e-5f, 500000.0f);
      c.rope_scaling = Llama3Scaling(64);
      c.tie_word_embeddings = true;
      c.eos_token_ids = {2, 3};
      p->push_back({"tiny-llama3", c});
    }
    {
      ModelConfig c = Llama("qwen2", 512, 64, 128, 2, 4, 2, 256, 1e-6f, 1000000.0f);
      c.attention_qkv_bias = true;
      c.bos_token_id = -1;  // Qwen2 tokenizers add no BOS
      p->push_back({"tiny-qwen2", c});
    }
    p->push_back({"tiny-opt", Opt(512, 64, 256, 2, 4, 128)});
    {
      // Like opt-350m: embeddings in a narrower space, post-LN.
      ModelConfig c = Opt(512, 64, 256, 2, 4, 128);
      c.word_embed_proj_dim = 32;
      c.do_layer_norm_before = false;
      p->push_back({"tiny-opt-proj", c});
    }
    // Published shapes (the models' config.json on the Hugging Face Hub).
    p->push_back({"llama-2-7b", Llama("llama", 32000, 4096, 11008, 32, 32, 32, 4096, 1e-5f, 10000.0f)});
    {
      ModelConfig c = Llama("llama", 128256, 4096, 14336, 32, 32, 8, 8192, 1e-5f, 500000.0f);
      c.bos_token_id = 128000;
      c.eos_token_ids = {128001};
      p->push_back({"llama-3-8b", c});
      c.max_position_embeddings = 131072;
      c.rope_scaling = Llama3Scaling(8192);
      p->push_back({"llama-3.1-8b", c});
    }
    {
      ModelConfig c = Llama("mistral", 32000, 4096, 14336, 32, 32, 8, 32768, 1e-5f, 10000.0f);
      c.sliding_window = 4096;  // Mistral-7B-v0.1
      p->push_back({"mistral-7b", c});
    }
    {
      ModelConfig c = Llama("qwen2", 152064, 3584, 18944, 28, 28, 4, 131072, 1e-6f, 1000000.0f);
      c.attention_qkv_bias = true;
      c.bos_token_id = 151643;
      c.eos_token_ids = {151643};
      p->push_back({"qwen2.5-7b", c});
    }
    p->push_back({"opt-6.7b", Opt(50272, 4096, 16384, 32, 32, 2048)});
    p->push_back({"opt-66b", Opt(50272, 9216, 36864, 64, 72, 2048)});
    return p;
  }();
  return *presets;
}

// ---- generator --------------------------------------------------------------

uint64_t Fnv1a(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char ch : text) hash = (hash ^ ch) * 0x100000001b3ull;
  return hash;
}

inline uint64_t SplitMix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Approximately N(0, 1): the sum of four uniform 16-bit quarters, centred and
// scaled to unit variance (support +-3.46).
inline float Gaussian(uint64_t key, int64_t index) {
  const uint64_t r = SplitMix64(key + static_cast<uint64_t>(index + 1) * 0x9e3779b97f4a7c15ull);
  const uint32_t sum = static_cast<uint32_t>((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
  // Each quarter is uniform on [0, 65536); (q + 0.5) / 65536 has mean 0.5, variance ~1/12.
  return ((static_cast<float>(sum) + 2.0f) * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}

int64_t ElementBytes(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

// Fills `out` ([n] elements of `dtype`) with offset + scale * N(0, 1).
void Fill(uint64_t key, float offset, float scale, DType dtype, int64_t n, uint8_t* out) {
  constexpr int64_t kParallelMin = 1 << 16;
  if (dtype == DType::kF32) {
    float* dst = reinterpret_cast<float*>(out);  // [n]
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dst[i] = offset + scale * Gaussian(key, i);
  } else if (dtype == DType::kF16) {
    uint16_t* dst = reinterpret_cast<uint16_t*>(out);  // [n]
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dst[i] = Fp32ToFp16(offset + scale * Gaussian(key, i));
  } else {
    uint16_t* dst = reinterpret_cast<uint16_t*>(out);  // [n]
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dst[i] = Fp32ToBf16(offset + scale * Gaussian(key, i));
  }
}

const char* TorchDType(DType dtype) {
  switch (dtype) {
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
    default: return "float32";
  }
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write"));
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> SynthPresetNames() {
  std::vector<std::string> names;
  for (const auto& [name, config] : Presets()) names.push_back(name);
  return names;
}

absl::StatusOr<ModelConfig> SynthPresetConfig(std::string_view name) {
  for (const auto& [preset, config] : Presets()) {
    if (preset == name) return config;
  }
  return absl::NotFoundError(absl::StrCat("no synthetic preset '", std::string(name),
                                          "'; presets: ", absl::StrJoin(SynthPresetNames(), ", ")));
}

absl::StatusOr<Checkpoint> SynthesizeCheckpoint(const ModelConfig& config, uint64_t seed, DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic weights are F32, F16 or BF16, not ",
                                                   std::string(DTypeName(dtype))));
  }
  if (auto status = config.Validate(); !status.ok()) return status;
  Checkpoint checkpoint;
  checkpoint.path = absl::StrCat("synthetic:", config.model_type, ":seed=", seed);
  checkpoint.format = "synthetic";
  checkpoint.config = config;
  const uint64_t seed_key = SplitMix64(seed ^ 0x5eed5eed5eed5eedull);
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    HostTensor tensor;
    tensor.name = name;
    tensor.dtype = dtype;
    tensor.shape = shape;
    const int64_t n = tensor.NumElements();
    tensor.nbytes = n * ElementBytes(dtype);
    // Uninitialized on purpose: Fill writes every byte, in parallel.
    std::shared_ptr<uint8_t[]> storage(new uint8_t[std::max<int64_t>(tensor.nbytes, 1)]);
    float offset = 0.0f, scale;
    if (shape.size() == 2) {
      scale = 1.0f / std::sqrt(static_cast<float>(shape[1]));  // Linear [out, in] and embeddings
    } else if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      scale = 0.05f;
    } else {  // every 1-D weight is a norm's scale
      offset = 1.0f;
      scale = 0.1f;
    }
    Fill(SplitMix64(seed_key ^ Fnv1a(name)), offset, scale, dtype, n, storage.get());
    tensor.data = storage.get();
    tensor.keep_alive = std::move(storage);
    checkpoint.tensors.emplace(name, std::move(tensor));
  }
  return checkpoint;
}

absl::Status WriteHfModel(const Checkpoint& checkpoint, const std::string& dir) {
  return WriteHfModel(checkpoint, dir, 0);
}

absl::Status WriteHfModel(const Checkpoint& checkpoint, const std::string& dir, int64_t max_shard_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir, ": cannot create: ", ec.message()));

  // Sorted by name, quantized tensors converted to F32.
  std::vector<std::string> names;
  for (const auto& [name, tensor] : checkpoint.tensors) names.push_back(name);
  std::sort(names.begin(), names.end());
  std::vector<HostTensor> tensors;
  std::map<DType, int64_t> bytes_by_dtype;
  for (const std::string& name : names) {
    const HostTensor& tensor = checkpoint.tensors.at(name);
    if (tensor.dtype == DType::kF32 || tensor.dtype == DType::kF16 || tensor.dtype == DType::kBF16) {
      tensors.push_back(tensor);
    } else {
      auto values = ToF32(tensor);
      if (!values.ok()) return values.status();
      tensors.push_back(MakeOwnedF32(name, tensor.shape, *std::move(values)));
    }
    tensors.back().name = name;
    bytes_by_dtype[tensors.back().dtype] += tensors.back().nbytes;
  }
  DType main_dtype = DType::kF32;
  int64_t most = -1;
  for (const auto& [dtype, bytes] : bytes_by_dtype) {
    if (bytes > most) {
      most = bytes;
      main_dtype = dtype;
    }
  }
  if (auto status = WriteTextFile(JoinPath(dir, "config.json"), ToHfConfigJson(checkpoint.config, TorchDType(main_dtype)));
      !status.ok()) {
    return status;
  }

  // Split greedily in name order.
  std::vector<std::vector<HostTensor>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (HostTensor& tensor : tensors) {
    total_bytes += tensor.nbytes;
    if (max_shard_bytes > 0 && !shards.back().empty() && shard_bytes + tensor.nbytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shard_bytes += tensor.nbytes;
    shards.back().push_back(std::move(tensor));
  }
  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  const std::string single_path = JoinPath(dir, "model.safetensors");
  // Remove the other layout's files so readers never see a stale mix.
  if (shards.size() == 1) {
    std::filesystem::remove(index_path, ec);
    return WriteSafetensors(single_path, shards[0]);
  }
  std::filesystem::remove(single_path, ec);
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string shard_name = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    if (auto status = WriteSafetensors(JoinPath(dir, shard_name), shards[i]); !status.ok()) return status;
    for (const HostTensor& tensor : shards[i]) weight_map[tensor.name] = shard_name;
  }
  nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  return WriteTextFile(index_path, index.dump(2) + "\n");
}

}  // namespace polar
