// See remote_generate.h.
#include "tools/polar/remote_generate.h"

#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "polar/v1/gateway.grpc.pb.h"
#include "services/common/status_mapping.h"

namespace polar::cli {

bool HaveRemoteGenerate() { return true; }

absl::Status RunRemoteGenerate(const Args& args, const SamplingParams& params) {
  const std::string target = args.Get("target");
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::Gateway::Stub> stub = v1::Gateway::NewStub(channel);

  v1::GenerateRequest request;
  const std::string& prompt = args.positional()[0];
  if (args.Has("chat")) {
    v1::ChatMessage* message = request.mutable_chat()->add_messages();
    message->set_role("user");
    message->set_content(prompt);
  } else {
    request.set_text(prompt);
  }
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_temperature(params.temperature);
  sampling->set_top_k(params.top_k);
  sampling->set_top_p(params.top_p);
  sampling->set_repetition_penalty(params.repetition_penalty);
  if (args.Has("seed")) sampling->set_seed(params.seed);
  request.set_max_tokens(params.max_tokens);
  request.set_ignore_eos(params.ignore_eos);

  absl::StatusOr<double> timeout = args.GetDouble("timeout", 600.0);
  if (!timeout.ok()) return timeout.status();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(*timeout * 1000)));
  std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader =
      stub->GenerateStream(&context, request);
  v1::GenerateStreamResponse chunk;
  while (reader->Read(&chunk)) {
    std::fwrite(chunk.text().data(), 1, chunk.text().size(), stdout);
    std::fflush(stdout);
  }
  std::fputc('\n', stdout);
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    absl::Status s = FromGrpcStatus(status);
    return absl::Status(s.code(), absl::StrCat(target, ": ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace polar::cli
