// See mlp_sparsity.h.
#include "engine/model/mlp_sparsity.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "engine/model/host_tensor.h"
#include "engine/model/router_file.h"
#include "engine/model/safetensors_file.h"

namespace polar {

// ---- routers ----

MlpRouters MlpRouters::ZerosFor(const ModelConfig& config, int64_t rank) {
  MlpRouters r;
  r.num_layers = config.num_layers;
  r.hidden_size = config.hidden_size;
  r.ffn_size = config.intermediate_size;
  r.rank = rank;
  r.bucket_max_batch = DefaultMlpBatchBuckets();
  r.down.assign(r.num_layers, std::vector<float>(rank * r.hidden_size, 0.0f));
  r.up.assign(r.num_layers, std::vector<float>(r.ffn_size * rank, 0.0f));
  r.bias.assign(r.num_layers, std::vector<float>(r.ffn_size, 0.0f));
  r.neurons.assign(r.num_layers,
                   std::vector<int32_t>(r.bucket_max_batch.size(), static_cast<int32_t>(r.ffn_size)));
  return r;
}

int64_t MlpRouters::Bucket(int64_t batch) const {
  const auto it = std::lower_bound(bucket_max_batch.begin(), bucket_max_batch.end(), batch);
  const int64_t i = it - bucket_max_batch.begin();
  return std::min<int64_t>(i, static_cast<int64_t>(bucket_max_batch.size()) - 1);
}

absl::Status MlpRouters::Validate(const ModelConfig& config) const {
  if (config.family != ArchFamily::kOpt) {
    return absl::FailedPreconditionError(
        "MLP routers need a ReLU MLP (OPT); this model's MLP is SwiGLU (LLaMA family), which has no MLP sparsity");
  }
  if (num_layers != config.num_layers || hidden_size != config.hidden_size || ffn_size != config.intermediate_size) {
    return absl::InvalidArgumentError(absl::StrCat("MLP routers are for ", num_layers, " layers, hidden ", hidden_size,
                                                   ", ffn ", ffn_size, "; the model has ", config.num_layers,
                                                   " layers, hidden ", config.hidden_size, ", ffn ",
                                                   config.intermediate_size));
  }
  if (rank < 1 || rank > 65536) return absl::InvalidArgumentError(absl::StrCat("MLP routers: rank ", rank));
  if (bucket_max_batch.empty() || bucket_max_batch.front() < 1 ||
      !std::is_sorted(bucket_max_batch.begin(), bucket_max_batch.end(), std::less_equal<int32_t>())) {
    return absl::InvalidArgumentError("MLP routers: batch buckets must be positive and strictly ascending");
  }
  if (static_cast<int64_t>(down.size()) != num_layers || static_cast<int64_t>(up.size()) != num_layers ||
      static_cast<int64_t>(bias.size()) != num_layers || static_cast<int64_t>(neurons.size()) != num_layers) {
    return absl::InvalidArgumentError("MLP routers: per-layer lists do not match num_layers");
  }
  auto finite = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
  };
  for (int64_t l = 0; l < num_layers; ++l) {
    if (static_cast<int64_t>(down[l].size()) != rank * hidden_size ||
        static_cast<int64_t>(up[l].size()) != ffn_size * rank || static_cast<int64_t>(bias[l].size()) != ffn_size) {
      return absl::InvalidArgumentError(absl::StrCat("MLP routers: layer ", l, " has misshapen weights"));
    }
    if (!finite(down[l]) || !finite(up[l]) || !finite(bias[l])) {
      return absl::InvalidArgumentError(absl::StrCat("MLP routers: layer ", l, " has non-finite weights"));
    }
    if (neurons[l].size() != bucket_max_batch.size()) {
      return absl::InvalidArgumentError(absl::StrCat("MLP routers: layer ", l, " has ", neurons[l].size(),
                                                     " neuron counts for ", bucket_max_batch.size(), " buckets"));
    }
    for (int32_t k : neurons[l]) {
      if (k < 1 || k > ffn_size) {
        return absl::InvalidArgumentError(absl::StrCat("MLP routers: layer ", l, " keeps ", k, " neurons of ", ffn_size));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status MlpRouters::Save(const std::string& path) const {
  std::vector<HostTensor> tensors;
  for (int64_t l = 0; l < num_layers; ++l) {
    tensors.push_back(MakeOwnedF32(absl::StrCat("layers.", l, ".down"), {rank, hidden_size}, down[l]));
    tensors.push_back(MakeOwnedF32(absl::StrCat("layers.", l, ".up"), {ffn_size, rank}, up[l]));
    tensors.push_back(MakeOwnedF32(absl::StrCat("layers.", l, ".bias"), {ffn_size}, bias[l]));
  }
  const std::map<std::string, std::string> metadata = {
      {"polar.mlp_routers", "1"},
      {"num_layers", absl::StrCat(num_layers)},
      {"hidden_size", absl::StrCat(hidden_size)},
      {"ffn_size", absl::StrCat(ffn_size)},
      {"rank", absl::StrCat(rank)},
      {"batch_buckets", nlohmann::json(bucket_max_batch).dump()},
      {"neurons", nlohmann::json(neurons).dump()},
  };
  return WriteSafetensors(path, tensors, metadata);
}

absl::StatusOr<MlpRouters> MlpRouters::Load(const std::string& path, const ModelConfig& config) {
  absl::StatusOr<RouterFileReader> file = RouterFileReader::Open(path, "polar.mlp_routers", "MLP-routers");
  if (!file.ok()) return file.status();
  MlpRouters r;
  if (absl::Status s = file->GetPositive({{"num_layers", &r.num_layers},
                                          {"hidden_size", &r.hidden_size},
                                          {"ffn_size", &r.ffn_size},
                                          {"rank", &r.rank}});
      !s.ok()) {
    return s;
  }
  if (r.num_layers > 100000 || r.ffn_size > (int64_t{1} << 24) || r.rank > 65536) {
    return file->Error("implausible sizes");
  }
  // JSON lists of integers; a malformed one is an error, never an exception.
  auto parse_json = [&](const std::string& key) -> absl::StatusOr<nlohmann::json> {
    absl::StatusOr<std::string> text = file->Get(key);
    if (!text.ok()) return text.status();
    nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (!j.is_array()) return file->Error(absl::StrCat(key, " is not a JSON array"));
    return j;
  };
  auto to_ints = [](const nlohmann::json& j, std::vector<int32_t>& out) {
    if (!j.is_array()) return false;
    for (const nlohmann::json& v : j) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (int64_t{1} << 30)) return false;
      out.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    return true;
  };
  absl::StatusOr<nlohmann::json> buckets = parse_json("batch_buckets");
  if (!buckets.ok()) return buckets.status();
  if (!to_ints(*buckets, r.bucket_max_batch)) return file->Error("batch_buckets holds a bad value");
  absl::StatusOr<nlohmann::json> neurons = parse_json("neurons");
  if (!neurons.ok()) return neurons.status();
  if (static_cast<int64_t>(neurons->size()) != r.num_layers) return file->Error("neurons does not list every layer");
  r.neurons.resize(r.num_layers);
  for (int64_t l = 0; l < r.num_layers; ++l) {
    if (!to_ints((*neurons)[l], r.neurons[l])) {
      return file->Error(absl::StrCat("neurons of layer ", l, " hold a bad value"));
    }
  }
  r.down.resize(r.num_layers);
  r.up.resize(r.num_layers);
  r.bias.resize(r.num_layers);
  for (int64_t l = 0; l < r.num_layers; ++l) {
    for (auto [suffix, dst, shape] :
         {std::tuple<const char*, std::vector<float>*, std::vector<int64_t>>{"down", &r.down[l], {r.rank, r.hidden_size}},
          {"up", &r.up[l], {r.ffn_size, r.rank}},
          {"bias", &r.bias[l], {r.ffn_size}}}) {
      absl::StatusOr<std::vector<float>> values = file->ReadF32(absl::StrCat("layers.", l, ".", suffix), shape);
      if (!values.ok()) return values.status();
      *dst = std::move(*values);
    }
  }
  if (absl::Status s = r.Validate(config); !s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  return r;
}

// ---- the engine's MLP ----

absl::Status MlpSparsity::Init(const ModelConfig& config, Backend& backend, int64_t max_tokens,
                               std::vector<MlpLayerWeights> layers) {
  config_ = config;
  backend_ = &backend;
  max_tokens_ = max_tokens;
  layers_ = std::move(layers);
  counters_ = std::make_unique<MlpCounters>(config.num_layers);
  return absl::OkStatus();
}

absl::Status MlpSparsity::SetRouters(const MlpRouters& routers) {
  if (absl::Status s = routers.Validate(config_); !s.ok()) return s;
  Backend& b = *backend_;
  const int64_t layers = config_.num_layers, d = config_.hidden_size, ffn = config_.intermediate_size;
  std::vector<Tensor> down(layers), up(layers), bias(layers);
  for (int64_t l = 0; l < layers; ++l) {
    absl::StatusOr<Tensor> t =
        b.UploadWeight(MakeOwnedF32(absl::StrCat("mlp_router.", l, ".down"), {routers.rank, d}, routers.down[l]));
    if (!t.ok()) return t.status();
    down[l] = *t;
    t = b.UploadWeight(MakeOwnedF32(absl::StrCat("mlp_router.", l, ".up"), {ffn, routers.rank}, routers.up[l]));
    if (!t.ok()) return t.status();
    up[l] = *t;
    t = b.UploadWeight(MakeOwnedF32(absl::StrCat("mlp_router.", l, ".bias"), {ffn}, routers.bias[l]));
    if (!t.ok()) return t.status();
    bias[l] = *t;
  }
  // Set-up allocations, once (or when a wider router arrives).
  if (fc2_t_.empty()) {
    for (const MlpLayerWeights& w : layers_) {
      absl::StatusOr<Tensor> t = b.TransposedWeight(w.fc2);
      if (!t.ok()) return t.status();
      fc2_t_.push_back(*t);
    }
    absl::StatusOr<Tensor> scores = b.AllocateScratch(max_tokens_, ffn);
    if (!scores.ok()) return scores.status();
    scores_ = *scores;
    absl::StatusOr<Tensor> indices = b.AllocateIndices(ffn);
    if (!indices.ok()) return indices.status();
    indices_ = *indices;
  }
  if (low_.cols < routers.rank) {
    absl::StatusOr<Tensor> low = b.AllocateScratch(max_tokens_, routers.rank);
    if (!low.ok()) return low.status();
    low_ = *low;
  }
  down_ = std::move(down);
  up_ = std::move(up);
  bias_ = std::move(bias);
  routers_ = routers;
  has_routers_ = true;
  return absl::OkStatus();
}

void MlpSparsity::BeginStep(const StepBatch& step) {
  step_ = &step;
  const int64_t num_seqs = step.num_seqs();
  bool sparse = has_routers_ && observer_ == nullptr && num_seqs > 0 && !step.density.empty();
  for (int64_t s = 0; s < num_seqs && sparse; ++s) {
    sparse = step.q_indptr[s + 1] - step.q_indptr[s] == 1 && step.density[s] < 1.0f;
  }
  sparse_step_ = sparse;
  bucket_ = sparse ? routers_.Bucket(num_seqs) : 0;
}

void MlpSparsity::Route(int64_t layer, const Tensor& router_input) {
  layer_k_ = -1;
  if (observer_ != nullptr) {
    host_input_.resize(router_input.size());
    if (!backend_->CopyToHost(router_input, host_input_.data()).ok()) host_input_.clear();
  }
  if (!sparse_step_) return;
  const int64_t ffn = config_.intermediate_size;
  const int64_t k = routers_.neurons[layer][bucket_];
  if (static_cast<double>(k) > static_cast<double>(dense_above_) * static_cast<double>(ffn)) return;
  Backend& b = *backend_;
  const int64_t n = router_input.rows;
  Tensor low = Tensor{low_.data, low_.dtype, n, routers_.rank};
  Tensor scores = scores_.FirstRows(n);
  b.Linear(router_input, down_[layer], Tensor{}, low);
  b.Linear(low, up_[layer], bias_[layer], scores);
  b.SelectMlpNeurons(scores, k, indices_);
  layer_k_ = k;
}

void MlpSparsity::Forward(int64_t layer, const Tensor& in, Tensor hidden, Tensor x) {
  Backend& b = *backend_;
  const MlpLayerWeights& w = layers_[layer];
  const int64_t n = in.rows, ffn = config_.intermediate_size;
  counters_->total[layer].fetch_add(n * ffn, std::memory_order_relaxed);
  counters_->active[layer].fetch_add(n * (layer_k_ >= 0 ? layer_k_ : ffn), std::memory_order_relaxed);
  if (layer_k_ >= 0 && execution_ == MlpExecution::kGather) {
    b.GatherMlp(in, w.fc1, w.b1, fc2_t_[layer], w.b2, indices_, layer_k_, hidden, x, /*accumulate=*/true);
    return;
  }
  b.Linear(in, w.fc1, w.b1, hidden);
  if (observer_ != nullptr && static_cast<int64_t>(host_input_.size()) == n * config_.hidden_size) {
    host_preact_.resize(hidden.size());
    if (b.CopyToHost(hidden, host_preact_.data()).ok()) observer_->OnLayer(layer, *step_, host_input_, host_preact_);
  }
  b.Relu(hidden);
  if (layer_k_ >= 0) b.MaskMlpNeurons(hidden, indices_, layer_k_);  // kMasked
  b.Linear(hidden, w.fc2, w.b2, x, /*accumulate=*/true);
}

}  // namespace polar
