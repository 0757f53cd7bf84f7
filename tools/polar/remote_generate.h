// `polar generate --target HOST:PORT`: the same command, streamed through a
// polar-gateway over gRPC instead of the in-process engine.
#pragma once

#include "absl/status/status.h"
#include "engine/runtime/sampler.h"
#include "tools/polar/args.h"

namespace polar::cli {

// True when this build has the gRPC client (services built).
bool HaveRemoteGenerate();

// Streams the completion of args->positional()[0] from the gateway at
// --target to stdout. `params` carries the parsed sampling flags.
absl::Status RunRemoteGenerate(const Args& args, const SamplingParams& params);

}  // namespace polar::cli
