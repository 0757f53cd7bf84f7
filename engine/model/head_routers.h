// Polar Sparsity's head routers for one model and its calibrated densities:
// what `polar calibrate` writes and the engine loads (--routers).
//
// Per routed layer a linear scorer on the layer's pre-attention normed hidden
// state, one logit per query head: scores = W · norm(x) + b. The engine keeps
// each decoding sequence's top KV groups by score (a group's score reduces its
// query heads' logits, GroupScore). Dense layers (layer 0 and the critical
// layers calibration found) have no router and always compute every head.
//
// File format: safetensors; per layer with a router `layers.{l}.weight`
// [num_heads, hidden] and `layers.{l}.bias` [num_heads] (F32); string metadata
// "polar.head_routers" = "1", "num_layers", "hidden_size", "num_heads",
// "num_kv_heads", "group_score" ("max" | "mean"), "dense_layers" (JSON array),
// "default_density" (the calibrated density, a decimal in (0, 1]).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/model_config.h"

namespace polar {

struct HeadRouters {
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  GroupScore group_score = GroupScore::kMax;
  float default_density = 1.0f;
  std::vector<bool> dense;                 // [num_layers] not routed: every head, always
  // [num_layers] of [num_heads * hidden] and [num_heads]. Present for every
  // routed layer; a dense layer may keep the router calibration trained for
  // it (evaluation can route it), or have none (empty).
  std::vector<std::vector<float>> weight;
  std::vector<std::vector<float>> bias;

  // Routers shaped for `config`: every layer dense, no weights yet.
  static HeadRouters DenseFor(const ModelConfig& config);
  // Reads a routers file and checks it fits `config`; errors name the file.
  static absl::StatusOr<HeadRouters> Load(const std::string& path, const ModelConfig& config);
  absl::Status Save(const std::string& path) const;
  // Shapes consistent and, for `config`, matching; weights finite.
  absl::Status Validate(const ModelConfig& config) const;
};

// KV groups a sequence of `density` keeps: ceil(density * num_groups - 0.02),
// at least 1: never below the density asked for, except that a density typed
// with a few digits (0.67 or 0.6667 of 3 groups) means the group count it
// rounds to.
int32_t GroupsToKeep(float density, int64_t num_groups);

// "max" / "mean" and back.
const char* GroupScoreName(GroupScore score);
absl::StatusOr<GroupScore> ParseGroupScore(const std::string& name);

}  // namespace polar
