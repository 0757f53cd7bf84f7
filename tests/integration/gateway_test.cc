// polar-gateway end to end: a real polar-worker serving the default model
// and a real polar-gateway in front of it, both on loopback. Checks that a
// streamed completion is well formed, that Generate returns exactly the
// concatenated stream for the same seed, that stop sequences cut the text,
// that bad requests are INVALID_ARGUMENT, and that /metrics counts requests.
// Skips (with the reason) when the binaries or the model are missing.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "polar/v1/gateway.grpc.pb.h"
#include "polar/v1/worker.grpc.pb.h"
#include "tests/integration/service_processes.h"

namespace polar {
namespace {

using testing::ChildProcess;
using testing::Field;
using testing::MetricValue;

class GatewayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string bin = POLAR_BIN_DIR;
    if (!std::filesystem::exists(bin + "/polar-worker")) {
      skip_reason_ = "polar-worker is not built (" + bin + "/polar-worker)";
      return;
    }
    if (!std::filesystem::exists(bin + "/polar-gateway")) {
      skip_reason_ = "polar-gateway is not built";
      return;
    }
    if (!std::filesystem::exists(POLAR_DEFAULT_MODEL)) {
      skip_reason_ = std::string("default model not fetched (scripts/fetch-model): ") + POLAR_DEFAULT_MODEL;
      return;
    }
    worker_ = new ChildProcess();
    ASSERT_TRUE(worker_->Start({bin + "/polar-worker", "--model", POLAR_DEFAULT_MODEL, "--listen",
                                "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}));
    const std::string worker_line = worker_->WaitForLine("polar-worker listening", std::chrono::seconds(300));
    ASSERT_FALSE(worker_line.empty()) << "polar-worker did not start";
    const std::string worker_address = Field(worker_line, "grpc");
    worker_address_ = new std::string(worker_address);
    worker_metrics_address_ = new std::string(Field(worker_line, "metrics"));

    gateway_ = new ChildProcess();
    ASSERT_TRUE(gateway_->Start({bin + "/polar-gateway", "--listen", "127.0.0.1:0", "--metrics-listen",
                                 "127.0.0.1:0", "--workers", worker_address, "--max-queue", "64"}));
    const std::string gateway_line = gateway_->WaitForLine("polar-gateway listening", std::chrono::seconds(60));
    ASSERT_FALSE(gateway_line.empty()) << "polar-gateway did not start";
    gateway_address_ = new std::string(Field(gateway_line, "grpc"));
    metrics_address_ = new std::string(Field(gateway_line, "metrics"));

    // Ready once the gateway learned the model from the (warmed-up) worker.
    auto stub = v1::Gateway::NewStub(grpc::CreateChannel(*gateway_address_, grpc::InsecureChannelCredentials()));
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(300);
    grpc::Status status;
    while (std::chrono::steady_clock::now() < end) {
      grpc::ClientContext ctx;
      v1::ModelInfo info;
      status = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
      if (status.ok() && info.workers_ready() > 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    FAIL() << "the gateway never became ready: " << status.error_message();
  }

  static void TearDownTestSuite() {
    delete gateway_;  // stops it
    delete worker_;
    delete gateway_address_;
    delete metrics_address_;
    delete worker_address_;
    delete worker_metrics_address_;
    gateway_ = worker_ = nullptr;
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_NE(gateway_address_, nullptr);
    stub_ = v1::Gateway::NewStub(grpc::CreateChannel(*gateway_address_, grpc::InsecureChannelCredentials()));
  }

  // Streams `request`; returns the messages.
  std::vector<v1::GenerateStreamResponse> Stream(const v1::GenerateRequest& request, grpc::Status* status) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    auto reader = stub_->GenerateStream(&ctx, request);
    std::vector<v1::GenerateStreamResponse> messages;
    v1::GenerateStreamResponse message;
    while (reader->Read(&message)) messages.push_back(message);
    *status = reader->Finish();
    return messages;
  }

  grpc::Status Unary(const v1::GenerateRequest& request, v1::GenerateResponse* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    return stub_->Generate(&ctx, request, response);
  }

  static inline std::string skip_reason_;
  static inline ChildProcess* worker_ = nullptr;
  static inline ChildProcess* gateway_ = nullptr;
  static inline std::string* gateway_address_ = nullptr;
  static inline std::string* metrics_address_ = nullptr;
  static inline std::string* worker_address_ = nullptr;
  static inline std::string* worker_metrics_address_ = nullptr;

  // Waits until the worker's /metrics show nothing running or waiting and
  // every KV block free again: the gateway's cancel or deadline reached it
  // and the blocks were released. False after `timeout`.
  static bool WaitForIdleWorker(std::chrono::seconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      const std::string& metrics = *worker_metrics_address_;
      if (MetricValue(metrics, "polar_requests_running") == 0 && MetricValue(metrics, "polar_requests_waiting") == 0 &&
          MetricValue(metrics, "polar_kv_cache_usage_ratio") == 0) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  std::unique_ptr<v1::Gateway::Stub> stub_;
};

v1::GenerateRequest TextRequest(const std::string& text, int max_tokens) {
  v1::GenerateRequest request;
  request.set_text(text);
  request.set_max_tokens(max_tokens);
  request.set_ignore_eos(true);
  return request;
}

TEST_F(GatewayTest, StreamsACompletion) {
  v1::GenerateRequest request = TextRequest("The capital of France is", 12);
  request.mutable_sampling()->set_temperature(0);
  request.set_request_id("stream-1");
  grpc::Status status;
  auto messages = Stream(request, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(messages.empty());
  std::string text;
  int tokens = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    EXPECT_EQ(messages[i].request_id(), "stream-1");
    text += messages[i].text();
    tokens += messages[i].tokens_size();
    if (i + 1 < messages.size()) EXPECT_EQ(messages[i].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  }
  const v1::GenerateStreamResponse& last = messages.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(tokens, 12);
  EXPECT_EQ(last.usage().completion_tokens(), 12);
  EXPECT_GT(last.usage().prompt_tokens(), 0);
  EXPECT_FALSE(text.empty());
  EXPECT_GE(last.timings().total_seconds(), last.timings().time_to_first_token_seconds());
  EXPECT_GT(last.timings().time_to_first_token_seconds(), 0.0);

  // The gateway's Tokenize agrees with the prompt it generated from.
  grpc::ClientContext ctx;
  v1::TokenizeRequest tokenize;
  tokenize.set_text("The capital of France is");
  v1::TokenizeResponse tokenized;
  ASSERT_TRUE(stub_->Tokenize(&ctx, tokenize, &tokenized).ok());
  EXPECT_EQ(tokenized.token_ids_size(), last.usage().prompt_tokens());
  EXPECT_EQ(tokenized.pieces_size(), tokenized.token_ids_size());
}

// A chat reply ends with the model's end-of-turn token: reported as a
// special token with its spelling as the piece, never in the text.
TEST_F(GatewayTest, ChatReplyEndsWithASpecialStopToken) {
  v1::GenerateRequest request;
  v1::ChatMessage* message = request.mutable_chat()->add_messages();
  message->set_role("user");
  message->set_content("Reply with one word: is water wet?");
  request.set_max_tokens(64);
  request.mutable_sampling()->set_temperature(0);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  v1::GenerateResponse response;
  const grpc::Status status = stub_->Generate(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.finish_reason(), v1::FINISH_REASON_STOP_TOKEN) << response.text();
  ASSERT_GT(response.tokens_size(), 1);
  const v1::Token& last = response.tokens(response.tokens_size() - 1);
  EXPECT_TRUE(last.special());
  EXPECT_EQ(last.piece(), "<|im_end|>");
  EXPECT_FALSE(response.tokens(0).special());
  EXPECT_EQ(response.text().find("<|im_end|>"), std::string::npos) << response.text();
}

TEST_F(GatewayTest, UnaryEqualsStreamForTheSameSeed) {
  v1::GenerateRequest request = TextRequest("Once upon a time", 16);
  request.mutable_sampling()->set_temperature(0.9f);
  request.mutable_sampling()->set_top_p(0.95f);
  request.mutable_sampling()->set_seed(1234);
  grpc::Status status;
  auto messages = Stream(request, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::string streamed_text;
  std::vector<int32_t> streamed_ids;
  for (const auto& m : messages) {
    streamed_text += m.text();
    for (const auto& t : m.tokens()) streamed_ids.push_back(t.id());
  }
  v1::GenerateResponse response;
  status = Unary(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<int32_t> unary_ids;
  for (const auto& t : response.tokens()) unary_ids.push_back(t.id());
  EXPECT_EQ(response.text(), streamed_text);
  EXPECT_EQ(unary_ids, streamed_ids);
  EXPECT_EQ(response.finish_reason(), messages.back().finish_reason());
  EXPECT_EQ(response.seed(), 1234u);
  EXPECT_EQ(messages.back().seed(), 1234u);
}

TEST_F(GatewayTest, StopSequenceCutsTheText) {
  v1::GenerateRequest request = TextRequest("Count: one, two, three,", 24);
  request.mutable_sampling()->set_temperature(0);
  v1::GenerateResponse full;
  ASSERT_TRUE(Unary(request, &full).ok());
  ASSERT_GE(full.text().size(), 8u) << full.text();
  // A stop string taken from the middle of the greedy completion.
  const std::string stop = full.text().substr(full.text().size() / 2, 3);
  const size_t cut = full.text().find(stop);
  request.add_stop(stop);
  grpc::Status status;
  auto messages = Stream(request, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::string text;
  for (const auto& m : messages) text += m.text();
  EXPECT_EQ(text, full.text().substr(0, cut)) << "stop: \"" << stop << "\"";
  EXPECT_EQ(messages.back().finish_reason(), v1::FINISH_REASON_STOP_SEQUENCE);
  EXPECT_EQ(messages.back().stop_sequence(), stop);
}

TEST_F(GatewayTest, BadRequestsAreInvalidArgument) {
  v1::GenerateResponse response;
  v1::GenerateRequest empty;
  grpc::Status status = Unary(empty, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("input"), std::string::npos) << status.error_message();

  v1::GenerateRequest bad_top_p = TextRequest("hi", 4);
  bad_top_p.mutable_sampling()->set_top_p(2.0f);
  grpc::Status stream_status;
  Stream(bad_top_p, &stream_status);
  EXPECT_EQ(stream_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(stream_status.error_message().find("top_p"), std::string::npos) << stream_status.error_message();

  v1::GenerateRequest too_long;
  for (int i = 0; i < 100000; ++i) too_long.mutable_token_ids()->add_ids(1);
  status = Unary(too_long, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(GatewayTest, MetricsCountRequests) {
  v1::GenerateResponse response;
  ASSERT_TRUE(Unary(TextRequest("Hello", 2), &response).ok());
  const std::string& address = *metrics_address_;
  httplib::Client client(address.substr(0, address.rfind(':')), std::stoi(address.substr(address.rfind(':') + 1)));
  auto result = client.Get("/metrics");
  ASSERT_TRUE(result) << "scrape failed";
  EXPECT_EQ(result->status, 200);
  for (const char* name : {"polar_requests_total{code=\"OK\",finish_reason=\"length\"}",
                           "polar_time_to_first_token_seconds_bucket", "polar_request_queue_seconds_count",
                           "polar_e2e_request_latency_seconds_sum", "polar_gateway_queue_size 0",
                           "polar_workers_ready 1"}) {
    EXPECT_NE(result->body.find(name), std::string::npos) << name << "\n" << result->body;
  }
}

TEST_F(GatewayTest, ClientCancelStopsTheWorkerRequest) {
  // Thousands of tokens take minutes on the CPU backend: an idle worker soon
  // after the cancel means the cancel reached it.
  v1::GenerateRequest request = TextRequest("Write a very long story:", 8000);
  grpc::ClientContext ctx;
  auto reader = stub_->GenerateStream(&ctx, request);
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));  // generation is under way
  EXPECT_GT(MetricValue(*worker_metrics_address_, "polar_kv_cache_usage_ratio"), 0);
  ctx.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForIdleWorker(std::chrono::seconds(20)));
}

TEST_F(GatewayTest, DeadlinePropagatesToTheWorker) {
  v1::GenerateRequest request = TextRequest("Write a very long story:", 8000);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1500));
  v1::GenerateResponse response;
  grpc::Status status = stub_->Generate(&ctx, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_TRUE(WaitForIdleWorker(std::chrono::seconds(20)));
}

// A second gateway: one unreachable worker address besides the real one,
// and no admission queue at all.
TEST_F(GatewayTest, FullQueueIsResourceExhaustedAndDeadWorkersAreSkipped) {
  ChildProcess gateway;
  ASSERT_TRUE(gateway.Start({std::string(POLAR_BIN_DIR) + "/polar-gateway", "--listen", "127.0.0.1:0",
                             "--metrics-listen", "", "--workers", "127.0.0.1:1," + *worker_address_,
                             "--max-queue", "0"}));
  const std::string line = gateway.WaitForLine("polar-gateway listening", std::chrono::seconds(60));
  ASSERT_FALSE(line.empty());
  auto stub = v1::Gateway::NewStub(grpc::CreateChannel(Field(line, "grpc"), grpc::InsecureChannelCredentials()));
  v1::ModelInfo info;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < end) {
    grpc::ClientContext ctx;
    if (stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok() && info.workers_ready() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(info.workers(), 2);
  EXPECT_EQ(info.workers_ready(), 1);
  EXPECT_GT(info.max_prompt_tokens(), 0);
  EXPECT_GT(info.model().vocab_size(), 0);

  grpc::ClientContext ctx;
  v1::GenerateResponse response;
  grpc::Status status = stub->Generate(&ctx, TextRequest("Hello", 2), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("queue is full"), std::string::npos) << status.error_message();
}

// A gateway that waits up to 300 ms to fill batches of 4: three concurrent
// requests share one worker call, and each gets exactly what it gets alone
// (a request's output never depends on what it is batched with).
TEST_F(GatewayTest, BatchedRequestsEqualSoloRequests) {
  ChildProcess gateway;
  ASSERT_TRUE(gateway.Start({std::string(POLAR_BIN_DIR) + "/polar-gateway", "--listen", "127.0.0.1:0",
                             "--metrics-listen", "127.0.0.1:0", "--workers", *worker_address_, "--max-batch", "4",
                             "--batch-window-ms", "300"}));
  const std::string line = gateway.WaitForLine("polar-gateway listening", std::chrono::seconds(60));
  ASSERT_FALSE(line.empty());
  auto stub = v1::Gateway::NewStub(grpc::CreateChannel(Field(line, "grpc"), grpc::InsecureChannelCredentials()));
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < end) {
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    if (stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok() && info.workers_ready() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }

  const std::vector<std::string> prompts = {"The sky is", "My favourite food is", "In 1492,"};
  std::vector<v1::GenerateRequest> requests;
  std::vector<v1::GenerateResponse> solo(prompts.size()), batched(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    requests.push_back(TextRequest(prompts[i], 8));
    requests.back().mutable_sampling()->set_temperature(0.7f);
    requests.back().mutable_sampling()->set_seed(100 + i);
    ASSERT_TRUE(Unary(requests[i], &solo[i]).ok());
  }
  std::vector<grpc::Status> statuses(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
      statuses[i] = stub->Generate(&ctx, requests[i], &batched[i]);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    EXPECT_EQ(batched[i].text(), solo[i].text()) << prompts[i];
    EXPECT_EQ(batched[i].usage().completion_tokens(), 8);
  }
  // The three shared calls: fewer worker calls than requests.
  const std::string metrics = Field(line, "metrics");
  httplib::Client client(metrics.substr(0, metrics.rfind(':')), std::stoi(metrics.substr(metrics.rfind(':') + 1)));
  auto scrape = client.Get("/metrics");
  ASSERT_TRUE(scrape);
  const std::string key = "\npolar_gateway_worker_calls_total ";  // the sample, not # HELP/# TYPE
  const size_t at = scrape->body.find(key);
  ASSERT_NE(at, std::string::npos) << scrape->body;
  const double calls = std::stod(scrape->body.substr(at + key.size()));
  EXPECT_GE(calls, 1);
  EXPECT_LT(calls, 3) << scrape->body;
}

}  // namespace
}  // namespace polar
