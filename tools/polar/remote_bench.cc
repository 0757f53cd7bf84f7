// See remote_bench.h: the load of load_bench.h sent as GenerateStream calls
// to a polar-gateway (token-id prompts, ignore_eos).
#include "tools/polar/remote_bench.h"

#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "polar/v1/gateway.grpc.pb.h"
#include "tools/polar/load_bench.h"

namespace polar::cli {
namespace {

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN_CODE";
  }
}

v1::GenerateRequest ToGenerateRequest(const LoadRequest& load) {
  v1::GenerateRequest request;
  v1::TokenIds* ids = request.mutable_token_ids();
  for (int32_t id : load.prompt) ids->add_ids(id);
  request.set_max_tokens(load.max_tokens);
  request.set_ignore_eos(true);
  request.mutable_sampling()->set_seed(load.seed);
  return request;
}

RequestTimer RunOne(v1::Gateway::Stub& stub, const LoadRequest& load, double timeout_s) {
  const v1::GenerateRequest request = ToGenerateRequest(load);
  RequestTimer timer;
  timer.prompt_tokens = static_cast<int64_t>(load.prompt.size());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)));
  std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader = stub.GenerateStream(&context, request);
  v1::GenerateStreamResponse chunk;
  while (reader->Read(&chunk)) timer.OnTokens(chunk.tokens_size());
  const grpc::Status status = reader->Finish();
  timer.Finish();
  timer.code = CodeName(status.error_code());
  timer.error = status.error_message();
  return timer;
}

// The model's vocabulary size, which also proves the target answers.
absl::StatusOr<int32_t> FetchVocabSize(v1::Gateway::Stub& stub, const std::string& target, double timeout_s) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::microseconds(static_cast<int64_t>(std::min(timeout_s, 10.0) * 1e6)));
  v1::ModelInfo info;
  const grpc::Status status = stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot reach polar-gateway at ", target, ": ",
                                               CodeName(status.error_code()), " ", status.error_message()));
  }
  if (info.model().vocab_size() <= 0) return absl::FailedPreconditionError("the gateway reports no model vocabulary");
  return info.model().vocab_size();
}

}  // namespace

bool HaveRemoteBench() { return true; }

absl::Status RunRemoteBench(const Args& args) {
  absl::StatusOr<LoadConfig> config = ParseLoadConfig(args);
  if (!config.ok()) return config.status();
  const std::string target = args.Get("target");
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::Gateway::Stub> stub = v1::Gateway::NewStub(channel);
  absl::StatusOr<int32_t> vocab_size = FetchVocabSize(*stub, target, config->timeout_s);
  if (!vocab_size.ok()) return vocab_size.status();
  const double timeout_s = config->timeout_s;
  return RunLoad(*config, target, *vocab_size,
                 [&](const LoadRequest& request) { return RunOne(*stub, request, timeout_s); });
}

}  // namespace polar::cli
