// See head_routers.h.
#include "engine/model/head_routers.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/model/host_tensor.h"
#include "engine/model/router_file.h"
#include "engine/model/safetensors_file.h"

namespace polar {

int32_t GroupsToKeep(float density, int64_t num_groups) {
  // A typed-in 0.67 or 0.6667 of 3 groups means 2: forgive 0.02 of a group.
  const double kept = std::ceil(static_cast<double>(density) * static_cast<double>(num_groups) - 0.02);
  return static_cast<int32_t>(std::clamp<double>(kept, 1.0, static_cast<double>(num_groups)));
}

const char* GroupScoreName(GroupScore score) { return score == GroupScore::kMean ? "mean" : "max"; }

absl::StatusOr<GroupScore> ParseGroupScore(const std::string& name) {
  if (name == "max") return GroupScore::kMax;
  if (name == "mean") return GroupScore::kMean;
  return absl::InvalidArgumentError(absl::StrCat("group score \"", name, "\": expected max or mean"));
}

HeadRouters HeadRouters::DenseFor(const ModelConfig& config) {
  HeadRouters r;
  r.num_layers = config.num_layers;
  r.hidden_size = config.hidden_size;
  r.num_heads = config.num_heads;
  r.num_kv_heads = config.num_kv_heads;
  r.dense.assign(config.num_layers, true);
  r.weight.resize(config.num_layers);
  r.bias.resize(config.num_layers);
  return r;
}

absl::Status HeadRouters::Validate(const ModelConfig& config) const {
  if (num_layers != config.num_layers || hidden_size != config.hidden_size || num_heads != config.num_heads ||
      num_kv_heads != config.num_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "routers are for ", num_layers, " layers, hidden ", hidden_size, ", ", num_heads, "/", num_kv_heads,
        " heads; the model has ", config.num_layers, " layers, hidden ", config.hidden_size, ", ", config.num_heads,
        "/", config.num_kv_heads, " heads"));
  }
  if (static_cast<int64_t>(dense.size()) != num_layers || static_cast<int64_t>(weight.size()) != num_layers ||
      static_cast<int64_t>(bias.size()) != num_layers) {
    return absl::InvalidArgumentError("routers: per-layer lists do not match num_layers");
  }
  if (!(default_density > 0.0f && default_density <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("routers: default density ", default_density, " not in (0, 1]"));
  }
  for (int64_t l = 0; l < num_layers; ++l) {
    if (dense[l] && weight[l].empty() && bias[l].empty()) continue;
    if (static_cast<int64_t>(weight[l].size()) != num_heads * hidden_size ||
        static_cast<int64_t>(bias[l].size()) != num_heads) {
      return absl::InvalidArgumentError(absl::StrCat("routers: layer ", l, " has misshapen weights"));
    }
    auto finite = [](const std::vector<float>& v) {
      return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
    };
    if (!finite(weight[l]) || !finite(bias[l])) {
      return absl::InvalidArgumentError(absl::StrCat("routers: layer ", l, " has non-finite weights"));
    }
  }
  return absl::OkStatus();
}

absl::Status HeadRouters::Save(const std::string& path) const {
  std::vector<HostTensor> tensors;
  nlohmann::json dense_layers = nlohmann::json::array();
  for (int64_t l = 0; l < num_layers; ++l) {
    if (dense[l]) dense_layers.push_back(l);
    if (weight[l].empty()) continue;  // a dense layer may keep its trained router (evaluation)
    tensors.push_back(MakeOwnedF32(absl::StrCat("layers.", l, ".weight"), {num_heads, hidden_size}, weight[l]));
    tensors.push_back(MakeOwnedF32(absl::StrCat("layers.", l, ".bias"), {num_heads}, bias[l]));
  }
  const std::map<std::string, std::string> metadata = {
      {"polar.head_routers", "1"},
      {"num_layers", absl::StrCat(num_layers)},
      {"hidden_size", absl::StrCat(hidden_size)},
      {"num_heads", absl::StrCat(num_heads)},
      {"num_kv_heads", absl::StrCat(num_kv_heads)},
      {"group_score", GroupScoreName(group_score)},
      {"dense_layers", dense_layers.dump()},
      {"default_density", absl::StrCat(default_density)},
  };
  return WriteSafetensors(path, tensors, metadata);
}

absl::StatusOr<HeadRouters> HeadRouters::Load(const std::string& path, const ModelConfig& config) {
  absl::StatusOr<RouterFileReader> file = RouterFileReader::Open(path, "polar.head_routers", "head-routers");
  if (!file.ok()) return file.status();
  HeadRouters r;
  if (absl::Status s = file->GetPositive({{"num_layers", &r.num_layers},
                                          {"hidden_size", &r.hidden_size},
                                          {"num_heads", &r.num_heads},
                                          {"num_kv_heads", &r.num_kv_heads}});
      !s.ok()) {
    return s;
  }
  if (r.num_layers > 100000 || r.num_heads > 100000) return file->Error("implausible sizes");
  absl::StatusOr<std::string> score = file->Get("group_score");
  if (!score.ok()) return score.status();
  absl::StatusOr<GroupScore> parsed_score = ParseGroupScore(*score);
  if (!parsed_score.ok()) return file->Error(std::string(parsed_score.status().message()));
  r.group_score = *parsed_score;
  absl::StatusOr<std::string> density = file->Get("default_density");
  if (!density.ok()) return density.status();
  if (!absl::SimpleAtof(*density, &r.default_density)) {
    return file->Error(absl::StrCat("default_density \"", *density, "\""));
  }
  absl::StatusOr<std::string> dense_text = file->Get("dense_layers");
  if (!dense_text.ok()) return dense_text.status();
  r.dense.assign(r.num_layers, false);
  r.weight.resize(r.num_layers);
  r.bias.resize(r.num_layers);
  nlohmann::json dense_layers = nlohmann::json::parse(*dense_text, nullptr, /*allow_exceptions=*/false);
  if (!dense_layers.is_array()) return file->Error("dense_layers is not a JSON array");
  for (const nlohmann::json& l : dense_layers) {
    if (!l.is_number_integer() || l.get<int64_t>() < 0 || l.get<int64_t>() >= r.num_layers) {
      return file->Error("dense_layers holds a bad layer index");
    }
    r.dense[l.get<int64_t>()] = true;
  }
  for (int64_t l = 0; l < r.num_layers; ++l) {
    // A dense layer may carry its trained router (for evaluation); a routed one must.
    if (r.dense[l] && file->file().Tensor(absl::StrCat("layers.", l, ".weight")).status().code() ==
                          absl::StatusCode::kNotFound) {
      continue;
    }
    for (auto [suffix, dst, shape] :
         {std::tuple<const char*, std::vector<float>*, std::vector<int64_t>>{"weight", &r.weight[l],
                                                                             {r.num_heads, r.hidden_size}},
          {"bias", &r.bias[l], {r.num_heads}}}) {
      absl::StatusOr<std::vector<float>> values = file->ReadF32(absl::StrCat("layers.", l, ".", suffix), shape,
                                                                absl::StrCat("layer ", l, " is routed but "));
      if (!values.ok()) return values.status();
      *dst = std::move(*values);
    }
  }
  if (absl::Status s = r.Validate(config); !s.ok()) return file->Error(std::string(s.message()));
  return r;
}

}  // namespace polar
