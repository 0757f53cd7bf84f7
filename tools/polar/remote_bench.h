// `polar bench --target HOST:PORT`: load-tests a polar-gateway over gRPC.
// Sends GenerateStream requests with random prompt token ids (and
// ignore_eos, so every output has the asked length), either closed-loop
// (--concurrency N clients, each sending its next request when the previous
// one finished) or open-loop (--rate R requests/s with Poisson arrivals), and
// reports client-side throughput and TTFT / inter-token / end-to-end latency
// percentiles as a table on stdout (and JSON with --json FILE).
#pragma once

#include "absl/status/status.h"
#include "tools/polar/args.h"

namespace polar::cli {

// True when this build has the gRPC client (services built).
bool HaveRemoteBench();

// Runs the benchmark described by `args` (see main.cc's usage for the
// flags) against --target. Fails, without hanging, when the target is
// unreachable or every request failed.
absl::Status RunRemoteBench(const Args& args);

}  // namespace polar::cli
