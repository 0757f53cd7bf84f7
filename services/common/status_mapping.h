// The one mapping between absl::Status (engine and services) and gRPC status
// (the RPC edge), in both directions, plus the in-stream polar.v1.ErrorStatus
// a worker uses for a single request's failure inside a batch stream.
//
// absl::StatusCode and grpc::StatusCode define the same 17 codes with the same
// numbers (both follow google.rpc.Code), so codes map 1:1 and messages pass
// through unchanged: worker -> gateway -> client round trips lose nothing,
// and the gateway sees the engine's own code. Codes outside the known range
// (a peer from the future) become UNKNOWN rather than being trusted.
//
// One policy lives at the public edge only, in ToClientGrpcStatus: the
// engine answers OUT_OF_RANGE for "sequence longer than the model's context"
// (gRPC's OUT_OF_RANGE means "past a valid range that may move"), but for a
// client a prompt that can never fit is a bad request, so the gateway answers
// INVALID_ARGUMENT, as TGI and vLLM do (HTTP 4xx). Everything else passes as
// it is; the gateway validates prompt length before dispatch anyway, so this
// only matters if a worker's limit is tighter than the gateway knew.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "polar/v1/worker.pb.h"

namespace polar {

// absl -> gRPC, code for code, message preserved (OK carries no message).
grpc::Status ToGrpcStatus(const absl::Status& status);

// gRPC -> absl, code for code, message preserved; unknown codes -> UNKNOWN.
// For the gateway reading a worker's RPC result.
absl::Status FromGrpcStatus(const grpc::Status& status);

// ToGrpcStatus with the public edge's policy (see the file comment):
// OUT_OF_RANGE -> INVALID_ARGUMENT, message preserved. For the gateway's
// answers to clients.
grpc::Status ToClientGrpcStatus(const absl::Status& status);

// A request's failure inside a WorkerEvent stream, and back. An OK status
// gives code 0 and no message.
v1::ErrorStatus ToErrorStatus(const absl::Status& status);
absl::Status FromErrorStatus(const v1::ErrorStatus& status);

}  // namespace polar
