// polar: the command-line tool. Subcommands run the engine in-process
// (generate, tokenize, logits, bench) or inspect and make models (model).
#include <cstdio>
#include <string>
#include <vector>

#include "tools/polar/commands.h"

namespace {

constexpr char kUsage[] = R"(usage: polar COMMAND [OPTIONS]

commands:
  generate --model PATH [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
           [--repetition-penalty R] [--seed S] [--chat] [--ignore-eos] [--threads N]
           [--routers FILE [--density D]] PROMPT
      stream a completion of PROMPT (--temperature 0 = greedy; --chat wraps the
      prompt in the model's chat template as a user message)
  generate --target HOST:PORT [--timeout SECONDS] [same sampling flags] PROMPT
      the same, streamed through a polar-gateway
  tokenize --model PATH [--no-bos] [--no-special] TEXT
      print TEXT's token ids as a JSON array
  model info PATH [--tensors]
      architecture, shapes, dtypes and tensor types of a model
  model synth --preset NAME --out DIR [--seed S] [--dtype f32|f16|bf16]
      write a model with random weights (config.json + model.safetensors)
  logits --model PATH --tokens FILE.json --out FILE.f32 [--chunk N] [--threads N]
      teacher-forced logits of a JSON array of token ids, raw float32 [n, vocab]
  bench --model PATH [--batch N] [--prompt-tokens P] [--gen-tokens G] [--threads N]
      decode throughput of the in-process engine, one JSON line
  bench --target HOST:PORT [--concurrency N | --rate R] [--requests M] [--duration S]
        [--prompt-tokens P] [--prompt-tokens-spread F] [--output-tokens O]
        [--output-tokens-spread F] [--seed S] [--timeout SECONDS] [--json FILE]
      load-test a polar-gateway: throughput and TTFT / inter-token / end-to-end percentiles
  bench --model PATH (--concurrency N | --rate R) [same load flags] [--threads N]
        [--max-num-seqs N] [--kv-cache-bytes B]
      the same load straight into this process's engine (no gRPC): the baseline
      for what the gateway and worker add

  calibrate --model PATH --corpus FILE [MORE_FILES...] --out ROUTERS.safetensors [--report FILE.json]
       [--samples N] [--quality-target F] [--seed S] [--threads N]
      train Polar Sparsity's head routers, find the layers kept dense and the default
      density (the lowest whose validation perplexity rises by at most F, default 0.02)
  eval --model PATH --corpus FILE [--routers FILE] [--density D|default|dense|oracle]
       [--selection routers|oracle|random] [--unit group|head] [--window N] [--prompt N]
       [--batch N] [--max-windows N] [--seed S] [--threads N] [--route-all-layers] [--json]
      Polar Sparsity's cost: perplexity, top-1 agreement and mean KL against the dense
      model on decode steps (teacher-forced windows after a dense prompt), and the
      density achieved per layer

PATH is a .gguf file, a directory with config.json and safetensors, or synth:PRESET
(random weights made in memory; presets as for model synth).
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  const std::vector<std::string> rest(argv + 2, argv + argc);
  absl::Status status;
  if (command == "generate") {
    status = polar::cli::RunGenerate(rest);
  } else if (command == "tokenize") {
    status = polar::cli::RunTokenize(rest);
  } else if (command == "model") {
    status = polar::cli::RunModel(rest);
  } else if (command == "logits") {
    status = polar::cli::RunLogits(rest);
  } else if (command == "bench") {
    status = polar::cli::RunBench(rest);
  } else if (command == "eval") {
    status = polar::cli::RunEval(rest);
  } else if (command == "calibrate") {
    status = polar::cli::RunCalibrate(rest);
  } else {
    std::fprintf(stderr, "polar: unknown command '%s'\n\n%s", command.c_str(), kUsage);
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "polar %s: %s\n", command.c_str(), std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
