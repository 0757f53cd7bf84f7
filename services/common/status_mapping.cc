// absl::Status <-> grpc::Status <-> polar.v1.ErrorStatus; see the header for
// the policy.
#include "services/common/status_mapping.h"

#include <string>

namespace polar {
namespace {

// The numbers are equal by definition (google.rpc.Code); the asserts make a
// divergence a compile error instead of a silent remapping.
static_assert(static_cast<int>(absl::StatusCode::kOk) == grpc::StatusCode::OK);
static_assert(static_cast<int>(absl::StatusCode::kCancelled) == grpc::StatusCode::CANCELLED);
static_assert(static_cast<int>(absl::StatusCode::kUnknown) == grpc::StatusCode::UNKNOWN);
static_assert(static_cast<int>(absl::StatusCode::kInvalidArgument) == grpc::StatusCode::INVALID_ARGUMENT);
static_assert(static_cast<int>(absl::StatusCode::kDeadlineExceeded) == grpc::StatusCode::DEADLINE_EXCEEDED);
static_assert(static_cast<int>(absl::StatusCode::kNotFound) == grpc::StatusCode::NOT_FOUND);
static_assert(static_cast<int>(absl::StatusCode::kAlreadyExists) == grpc::StatusCode::ALREADY_EXISTS);
static_assert(static_cast<int>(absl::StatusCode::kPermissionDenied) == grpc::StatusCode::PERMISSION_DENIED);
static_assert(static_cast<int>(absl::StatusCode::kResourceExhausted) == grpc::StatusCode::RESOURCE_EXHAUSTED);
static_assert(static_cast<int>(absl::StatusCode::kFailedPrecondition) ==
              grpc::StatusCode::FAILED_PRECONDITION);
static_assert(static_cast<int>(absl::StatusCode::kAborted) == grpc::StatusCode::ABORTED);
static_assert(static_cast<int>(absl::StatusCode::kOutOfRange) == grpc::StatusCode::OUT_OF_RANGE);
static_assert(static_cast<int>(absl::StatusCode::kUnimplemented) == grpc::StatusCode::UNIMPLEMENTED);
static_assert(static_cast<int>(absl::StatusCode::kInternal) == grpc::StatusCode::INTERNAL);
static_assert(static_cast<int>(absl::StatusCode::kUnavailable) == grpc::StatusCode::UNAVAILABLE);
static_assert(static_cast<int>(absl::StatusCode::kDataLoss) == grpc::StatusCode::DATA_LOSS);
static_assert(static_cast<int>(absl::StatusCode::kUnauthenticated) == grpc::StatusCode::UNAUTHENTICATED);

// The highest code both define; anything above is not a code we know.
constexpr int kLastKnownCode = grpc::StatusCode::UNAUTHENTICATED;

absl::StatusCode AbslCodeFromNumber(int code) {
  if (code < 0 || code > kLastKnownCode) return absl::StatusCode::kUnknown;
  return static_cast<absl::StatusCode>(code);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // code() (unlike raw_code()) already folds numbers absl does not know to
  // kUnknown, so the cast always names a real gRPC code.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  absl::StatusCode code = AbslCodeFromNumber(static_cast<int>(status.error_code()));
  return absl::Status(code, status.error_message());
}

grpc::Status ToClientGrpcStatus(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kOutOfRange) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(status.message()));
  }
  return ToGrpcStatus(status);
}

v1::ErrorStatus ToErrorStatus(const absl::Status& status) {
  v1::ErrorStatus out;
  if (status.ok()) return out;
  out.set_code(static_cast<int>(status.code()));
  out.set_message(std::string(status.message()));
  return out;
}

absl::Status FromErrorStatus(const v1::ErrorStatus& status) {
  if (status.code() == 0) return absl::OkStatus();
  return absl::Status(AbslCodeFromNumber(status.code()), status.message());
}

}  // namespace polar
