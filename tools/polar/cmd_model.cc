// polar model info | synth: inspect a model, or write one with random weights.
#include <cstdio>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/checkpoint.h"
#include "engine/model/synth.h"
#include "tools/polar/args.h"
#include "tools/polar/commands.h"

namespace polar::cli {
namespace {

const char* FamilyName(ArchFamily f) { return f == ArchFamily::kOpt ? "opt" : "llama"; }

absl::Status RunInfo(const std::vector<std::string>& argv) {
  absl::StatusOr<Args> args = Args::Parse(argv, {}, {"tensors"});
  if (!args.ok()) return args.status();
  if (args->positional().size() != 1) return absl::InvalidArgumentError("usage: polar model info PATH");
  absl::StatusOr<Checkpoint> ck = OpenCheckpoint(args->positional()[0]);
  if (!ck.ok()) return ck.status();
  const ModelConfig& c = ck->config;
  std::printf("path:                %s\n", ck->path.c_str());
  std::printf("format:              %s\n", ck->format.c_str());
  std::printf("architecture:        %s (family %s)\n", c.model_type.c_str(), FamilyName(c.family));
  std::printf("layers:              %lld\n", static_cast<long long>(c.num_layers));
  std::printf("hidden size:         %lld\n", static_cast<long long>(c.hidden_size));
  std::printf("intermediate size:   %lld\n", static_cast<long long>(c.intermediate_size));
  std::printf("attention heads:     %lld query, %lld key/value (group %lld), head dim %lld\n",
              static_cast<long long>(c.num_heads), static_cast<long long>(c.num_kv_heads),
              static_cast<long long>(c.group_size()), static_cast<long long>(c.head_dim));
  std::printf("vocabulary:          %lld\n", static_cast<long long>(c.vocab_size));
  std::printf("max positions:       %lld\n", static_cast<long long>(c.max_position_embeddings));
  std::printf("tied embeddings:     %s\n", c.tie_word_embeddings ? "yes" : "no");
  if (c.family == ArchFamily::kLlama) {
    std::printf("rope theta:          %g%s\n", c.rope_theta,
                c.rope_scaling.type == RopeScalingType::kLlama3   ? " (llama3 scaling)"
                : c.rope_scaling.type == RopeScalingType::kLinear ? " (linear scaling)"
                                                                   : "");
    std::printf("rms norm eps:        %g\n", c.norm_eps);
  } else {
    std::printf("word embed proj dim: %lld\n", static_cast<long long>(c.word_embed_proj_dim));
    std::printf("layer norm before:   %s\n", c.do_layer_norm_before ? "yes" : "no (post-LN)");
  }
  std::map<std::string, std::pair<int64_t, int64_t>> by_type;  // dtype -> tensors, elements
  int64_t params = 0;
  for (const auto& [name, t] : ck->tensors) {
    auto& entry = by_type[std::string(DTypeName(t.dtype))];
    ++entry.first;
    entry.second += t.NumElements();
    params += t.NumElements();
  }
  std::printf("parameters:          %lld in %zu tensors\n", static_cast<long long>(params),
              ck->tensors.size());
  for (const auto& [type, e] : by_type) {
    std::printf("  %-6s %4lld tensors, %lld elements\n", type.c_str(), static_cast<long long>(e.first),
                static_cast<long long>(e.second));
  }
  if (args->Has("tensors")) {
    std::map<std::string, const HostTensor*> sorted;
    for (const auto& [name, t] : ck->tensors) sorted[name] = &t;
    for (const auto& [name, t] : sorted) {
      std::printf("%-60s %-6s %s\n", name.c_str(), std::string(DTypeName(t->dtype)).c_str(),
                  t->ShapeString().c_str());
    }
  }
  return absl::OkStatus();
}

absl::Status RunSynth(const std::vector<std::string>& argv) {
  absl::StatusOr<Args> args = Args::Parse(argv, {"preset", "out", "seed", "dtype"}, {});
  if (!args.ok()) return args.status();
  if (!args->Has("preset") || !args->Has("out")) {
    return absl::InvalidArgumentError(absl::StrCat("usage: polar model synth --preset NAME --out DIR; presets: ",
                                                   absl::StrJoin(SynthPresetNames(), ", ")));
  }
  absl::StatusOr<ModelConfig> config = SynthPresetConfig(args->Get("preset"));
  if (!config.ok()) return config.status();
  absl::StatusOr<int64_t> seed = args->GetInt("seed", 0);
  if (!seed.ok()) return seed.status();
  const std::string dtype_name = absl::AsciiStrToLower(args->Get("dtype", "f32"));
  DType dtype;
  if (dtype_name == "f32") {
    dtype = DType::kF32;
  } else if (dtype_name == "f16") {
    dtype = DType::kF16;
  } else if (dtype_name == "bf16") {
    dtype = DType::kBF16;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--dtype must be f32, f16 or bf16, not ", dtype_name));
  }
  absl::StatusOr<Checkpoint> ck = SynthesizeCheckpoint(*config, static_cast<uint64_t>(*seed), dtype);
  if (!ck.ok()) return ck.status();
  if (absl::Status s = WriteHfModel(*ck, args->Get("out")); !s.ok()) return s;
  std::printf("wrote %s (%s, %zu tensors) to %s\n", args->Get("preset").c_str(), dtype_name.c_str(),
              ck->tensors.size(), args->Get("out").c_str());
  return absl::OkStatus();
}

}  // namespace

absl::Status RunModel(const std::vector<std::string>& argv) {
  if (argv.empty()) return absl::InvalidArgumentError("usage: polar model info|synth ...");
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (argv[0] == "info") return RunInfo(rest);
  if (argv[0] == "synth") return RunSynth(rest);
  return absl::InvalidArgumentError(absl::StrCat("unknown model subcommand '", argv[0], "' (info, synth)"));
}

}  // namespace polar::cli
