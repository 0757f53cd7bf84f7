// Tests for the absl::Status <-> grpc::Status <-> polar.v1.ErrorStatus
// mapping: every code, by name, in every direction, messages preserved,
// unknown numbers folded to UNKNOWN, and the public edge's OUT_OF_RANGE policy.
#include "services/common/status_mapping.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace polar {
namespace {

struct CodePair {
  absl::StatusCode absl_code;
  grpc::StatusCode grpc_code;
};

// Written out by name (not computed by a cast) so a wrong mapping shows.
const std::vector<CodePair>& AllErrorCodes() {
  static const std::vector<CodePair> pairs = {
      {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
      {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN},
      {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
      {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
      {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
      {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
      {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
      {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
      {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
      {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL},
      {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
      {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
  };
  return pairs;
}

std::string MessageFor(absl::StatusCode code) {
  // Non-ASCII and punctuation too: messages must pass through byte for byte.
  return "prompt of 9000 tokens exceeds the context (8192) — code " + absl::StatusCodeToString(code);
}

TEST(StatusMappingTest, CoversEveryNonOkCode) {
  // absl and gRPC both define 16 error codes besides OK.
  EXPECT_EQ(AllErrorCodes().size(), 16u);
}

TEST(StatusMappingTest, AbslToGrpcMapsEveryCodeAndKeepsTheMessage) {
  for (const CodePair& pair : AllErrorCodes()) {
    SCOPED_TRACE(absl::StatusCodeToString(pair.absl_code));
    const std::string message = MessageFor(pair.absl_code);
    grpc::Status out = ToGrpcStatus(absl::Status(pair.absl_code, message));
    EXPECT_EQ(out.error_code(), pair.grpc_code);
    EXPECT_EQ(out.error_message(), message);
    EXPECT_FALSE(out.ok());
  }
}

TEST(StatusMappingTest, GrpcToAbslMapsEveryCodeAndKeepsTheMessage) {
  for (const CodePair& pair : AllErrorCodes()) {
    SCOPED_TRACE(absl::StatusCodeToString(pair.absl_code));
    const std::string message = MessageFor(pair.absl_code);
    absl::Status out = FromGrpcStatus(grpc::Status(pair.grpc_code, message));
    EXPECT_EQ(out.code(), pair.absl_code);
    EXPECT_EQ(out.message(), message);
  }
}

TEST(StatusMappingTest, RoundTripsAreIdentity) {
  for (const CodePair& pair : AllErrorCodes()) {
    SCOPED_TRACE(absl::StatusCodeToString(pair.absl_code));
    absl::Status original(pair.absl_code, MessageFor(pair.absl_code));
    EXPECT_EQ(FromGrpcStatus(ToGrpcStatus(original)), original);
    EXPECT_EQ(FromErrorStatus(ToErrorStatus(original)), original);
    // The worker -> gateway path: in-stream error, then the RPC status.
    EXPECT_EQ(FromGrpcStatus(ToGrpcStatus(FromErrorStatus(ToErrorStatus(original)))), original);
  }
}

TEST(StatusMappingTest, OkMapsToOkInEveryDirection) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).error_message().empty());
  EXPECT_TRUE(ToClientGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  // gRPC lets OK carry a message; absl's OK cannot, and nothing is lost that matters.
  EXPECT_TRUE(FromGrpcStatus(grpc::Status(grpc::StatusCode::OK, "fine")).ok());

  v1::ErrorStatus ok_proto = ToErrorStatus(absl::OkStatus());
  EXPECT_EQ(ok_proto.code(), 0);
  EXPECT_TRUE(ok_proto.message().empty());
  EXPECT_TRUE(FromErrorStatus(v1::ErrorStatus()).ok());
}

TEST(StatusMappingTest, ErrorStatusCarriesTheNumericCodeAndMessage) {
  v1::ErrorStatus proto = ToErrorStatus(absl::ResourceExhaustedError("waiting queue full (256)"));
  EXPECT_EQ(proto.code(), 8);  // google.rpc.Code RESOURCE_EXHAUSTED
  EXPECT_EQ(proto.message(), "waiting queue full (256)");

  v1::ErrorStatus from_wire;
  from_wire.set_code(14);  // UNAVAILABLE
  from_wire.set_message("worker draining");
  absl::Status status = FromErrorStatus(from_wire);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message(), "worker draining");
}

TEST(StatusMappingTest, UnknownNumbersBecomeUnknown) {
  for (int code : {17, 42, 1000, -1}) {
    SCOPED_TRACE(code);
    absl::Status from_grpc = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(code), "from the future"));
    EXPECT_EQ(from_grpc.code(), absl::StatusCode::kUnknown);
    EXPECT_EQ(from_grpc.message(), "from the future");

    v1::ErrorStatus proto;
    proto.set_code(code);
    proto.set_message("from the future");
    absl::Status from_proto = FromErrorStatus(proto);
    EXPECT_EQ(from_proto.code(), absl::StatusCode::kUnknown);
    EXPECT_EQ(from_proto.message(), "from the future");
  }
  // An absl::Status built from a number absl does not know reaches gRPC as UNKNOWN.
  grpc::Status out = ToGrpcStatus(absl::Status(static_cast<absl::StatusCode>(99), "odd"));
  EXPECT_EQ(out.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(out.error_message(), "odd");
}

TEST(StatusMappingTest, ClientEdgeTurnsOutOfRangeIntoInvalidArgument) {
  grpc::Status out = ToClientGrpcStatus(absl::OutOfRangeError("sequence of 9000 tokens exceeds 8192"));
  EXPECT_EQ(out.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(out.error_message(), "sequence of 9000 tokens exceeds 8192");
}

TEST(StatusMappingTest, ClientEdgeKeepsEveryOtherCode) {
  for (const CodePair& pair : AllErrorCodes()) {
    if (pair.absl_code == absl::StatusCode::kOutOfRange) continue;
    SCOPED_TRACE(absl::StatusCodeToString(pair.absl_code));
    const std::string message = MessageFor(pair.absl_code);
    grpc::Status out = ToClientGrpcStatus(absl::Status(pair.absl_code, message));
    EXPECT_EQ(out.error_code(), pair.grpc_code);
    EXPECT_EQ(out.error_message(), message);
  }
}

}  // namespace
}  // namespace polar
