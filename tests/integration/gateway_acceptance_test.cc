// Issue 3's serving acceptance, end to end with real processes on loopback:
// one polar-gateway in front of two polar-workers serving the default model
// on the CPU. Covers 64 concurrent streams (all complete, both workers used,
// each stream equal to the unary call with the same seed), overload
// (RESOURCE_EXHAUSTED at once, nothing hangs), kill -9 of a worker
// mid-stream (its streams end UNAVAILABLE within 2 s, the survivor takes new
// work, a worker restarted on the same port is used again), re-dispatch of
// requests queued on a killed worker, and SIGTERM of the gateway under load
// (every stream finishes, exit 0). Measured times are printed (facts to
// report, not assertions: the machine is shared). Skips when the binaries or
// the model are missing.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
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
#include "services/gateway/dns_resolver.h"
#include "tests/integration/service_processes.h"

namespace polar {
namespace {

using testing::ChildProcess;
using testing::Field;
using testing::MetricValue;
using testing::UnusedPort;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

v1::GenerateRequest SampledRequest(const std::string& text, int max_tokens, uint64_t seed) {
  v1::GenerateRequest request;
  request.set_text(text);
  request.set_max_tokens(max_tokens);
  request.set_ignore_eos(true);
  request.mutable_sampling()->set_temperature(0.8f);
  request.mutable_sampling()->set_seed(seed);
  return request;
}

std::unique_ptr<v1::Gateway::Stub> GatewayStub(const std::string& address) {
  return v1::Gateway::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

// A running worker: its process and addresses.
struct Worker {
  std::unique_ptr<ChildProcess> process;
  std::string grpc_address;
  std::string metrics_address;
};

// Starts a polar-worker listening on `port` (0: any); false if it never
// printed its listening line.
bool StartWorker(int port, Worker* worker, const std::vector<std::string>& extra = {},
                 const std::string& host = "127.0.0.1") {
  worker->process = std::make_unique<ChildProcess>();
  // One engine thread each: two workers share this machine's two cores.
  std::vector<std::string> argv = {std::string(POLAR_BIN_DIR) + "/polar-worker", "--model", POLAR_DEFAULT_MODEL,
                                   "--listen", absl::StrCat(host, ":", port), "--metrics-listen", "127.0.0.1:0",
                                   "--threads", "1", "--kv-cache-bytes", "268435456"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (!worker->process->Start(argv)) return false;
  const std::string line = worker->process->WaitForLine("polar-worker listening", std::chrono::seconds(300));
  worker->grpc_address = Field(line, "grpc");
  worker->metrics_address = Field(line, "metrics");
  return !line.empty();
}

// The worker's polar_generation_tokens_total (-1: scrape failed).
double GeneratedTokens(const Worker& worker) {
  return MetricValue(worker.metrics_address, "polar_generation_tokens_total");
}

// A running gateway.
struct Gateway {
  std::unique_ptr<ChildProcess> process;
  std::string grpc_address;
  std::string metrics_address;
};

// Starts a polar-gateway in front of `workers` with `extra` flags and waits
// until `ready` workers are ready; false on failure.
bool StartGateway(const std::string& workers, const std::vector<std::string>& extra, int ready, Gateway* gateway) {
  gateway->process = std::make_unique<ChildProcess>();
  std::vector<std::string> argv = {std::string(POLAR_BIN_DIR) + "/polar-gateway", "--listen", "127.0.0.1:0",
                                   "--metrics-listen", "127.0.0.1:0", "--workers", workers};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (!gateway->process->Start(argv)) return false;
  const std::string line = gateway->process->WaitForLine("polar-gateway listening", std::chrono::seconds(60));
  if (line.empty()) return false;
  gateway->grpc_address = Field(line, "grpc");
  gateway->metrics_address = Field(line, "metrics");
  auto stub = GatewayStub(gateway->grpc_address);
  const auto end = Clock::now() + std::chrono::seconds(300);
  while (Clock::now() < end) {
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    if (stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok() && info.workers_ready() >= ready) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Waits until the gateway at `address` reports `ready` ready workers.
bool WaitWorkersReady(const std::string& address, int ready, std::chrono::seconds timeout,
                      int* workers_known = nullptr) {
  auto stub = GatewayStub(address);
  const auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    if (stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok() && info.workers_ready() == ready) {
      if (workers_known != nullptr) *workers_known = info.workers();
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// One finished streaming call.
struct StreamResult {
  grpc::Status status;
  std::string text;
  std::vector<int32_t> ids;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  Clock::time_point ended;
};

StreamResult StreamOnce(v1::Gateway::Stub* stub, const v1::GenerateRequest& request, grpc::ClientContext* ctx,
                        std::atomic<int>* started = nullptr) {
  StreamResult result;
  auto reader = stub->GenerateStream(ctx, request);
  v1::GenerateStreamResponse message;
  bool first = true;
  while (reader->Read(&message)) {
    if (first && started != nullptr) started->fetch_add(1);
    first = false;
    result.text += message.text();
    for (const auto& token : message.tokens()) result.ids.push_back(token.id());
    if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) result.finish = message.finish_reason();
  }
  result.status = reader->Finish();
  result.ended = Clock::now();
  return result;
}

class GatewayAcceptanceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string bin = POLAR_BIN_DIR;
    if (!std::filesystem::exists(bin + "/polar-worker") || !std::filesystem::exists(bin + "/polar-gateway")) {
      skip_reason_ = "polar-worker / polar-gateway are not built in " + bin;
      return;
    }
    if (!std::filesystem::exists(POLAR_DEFAULT_MODEL)) {
      skip_reason_ = std::string("default model not fetched (scripts/fetch-model): ") + POLAR_DEFAULT_MODEL;
      return;
    }
    workers_ = new Worker[2];
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(StartWorker(0, &workers_[i])) << "polar-worker " << i << " did not start";
    gateway_ = new Gateway();
    ASSERT_TRUE(StartGateway(WorkerList(), {"--max-queue", "256"}, 2, gateway_)) << "the gateway never got 2 workers";
  }

  static void TearDownTestSuite() {
    delete gateway_;
    delete[] workers_;
    gateway_ = nullptr;
    workers_ = nullptr;
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_NE(gateway_, nullptr);
    ASSERT_FALSE(gateway_->grpc_address.empty());
  }

  static std::string WorkerList() { return workers_[0].grpc_address + "," + workers_[1].grpc_address; }

  static inline std::string skip_reason_;
  static inline Worker* workers_ = nullptr;
  static inline Gateway* gateway_ = nullptr;
};

TEST_F(GatewayAcceptanceTest, SixtyFourConcurrentStreamsCompleteOnBothWorkers) {
  constexpr int kStreams = 64;
  const double before[2] = {GeneratedTokens(workers_[0]), GeneratedTokens(workers_[1])};
  ASSERT_GE(before[0], 0);
  ASSERT_GE(before[1], 0);
  auto stub = GatewayStub(gateway_->grpc_address);
  const std::vector<std::string> prompts = {"The sky is", "My favourite food is", "In 1492,", "Once upon a time"};
  std::vector<v1::GenerateRequest> requests;
  for (int i = 0; i < kStreams; ++i) requests.push_back(SampledRequest(prompts[i % prompts.size()], 8, 1000 + i));

  std::vector<StreamResult> streamed(kStreams);
  std::vector<v1::GenerateResponse> unary(kStreams);
  std::vector<grpc::Status> unary_status(kStreams);
  const auto start = Clock::now();
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kStreams; ++i) {
      threads.emplace_back([&, i] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
        streamed[i] = StreamOnce(stub.get(), requests[i], &ctx);
      });
    }
    for (auto& t : threads) t.join();
  }
  const double stream_seconds = SecondsSince(start);
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kStreams; ++i) {
      threads.emplace_back([&, i] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
        unary_status[i] = stub->Generate(&ctx, requests[i], &unary[i]);
      });
    }
    for (auto& t : threads) t.join();
  }
  printf("[ measured ] 64 concurrent streams x 8 tokens: %.2f s; then 64 concurrent unary: %.2f s\n", stream_seconds,
         SecondsSince(start) - stream_seconds);

  int mismatches = 0;
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(streamed[i].status.ok()) << i << ": " << streamed[i].status.error_message();
    ASSERT_TRUE(unary_status[i].ok()) << i << ": " << unary_status[i].error_message();
    EXPECT_EQ(streamed[i].finish, v1::FINISH_REASON_LENGTH) << i;
    EXPECT_EQ(streamed[i].ids.size(), 8u) << i;
    EXPECT_EQ(unary[i].usage().completion_tokens(), 8) << i;
    std::vector<int32_t> unary_ids;
    for (const auto& token : unary[i].tokens()) unary_ids.push_back(token.id());
    EXPECT_EQ(unary_ids.size(), 8u) << i;
    // Every row of a step is computed independently of the rest of the
    // batch (batch-invariant GEMM, per-sequence attention and sampling), so
    // the same seed gives the same tokens however the load batched it.
    EXPECT_EQ(unary_ids, streamed[i].ids) << i;
    EXPECT_EQ(unary[i].text(), streamed[i].text) << i;
    if (unary_ids != streamed[i].ids) ++mismatches;
  }
  printf("[ measured ] stream != unary for the same seed under load: %d of %d requests\n", mismatches, kStreams);
  EXPECT_EQ(mismatches, 0);
  // Both workers generated tokens for these requests. A worker may count a
  // step's tokens just after their events reached the gateway: poll briefly.
  double after[2] = {0, 0};
  const auto poll_end = Clock::now() + std::chrono::seconds(5);
  do {
    after[0] = GeneratedTokens(workers_[0]);
    after[1] = GeneratedTokens(workers_[1]);
    if (after[0] - before[0] + after[1] - before[1] >= 2 * kStreams * 8) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (Clock::now() < poll_end);
  printf("[ measured ] tokens generated: worker 0 %.0f, worker 1 %.0f (of %d)\n", after[0] - before[0],
         after[1] - before[1], 2 * kStreams * 8);
  EXPECT_GT(after[0], before[0]);
  EXPECT_GT(after[1], before[1]);
  EXPECT_GE(after[0] - before[0] + after[1] - before[1], 2 * kStreams * 8);
}

// A gateway admitting at most 2 requests not yet started, flooded with 32
// at once: the overflow is refused at once, the rest complete, nothing hangs.
TEST_F(GatewayAcceptanceTest, OverloadIsResourceExhaustedAtOnceAndNothingHangs) {
  Gateway gateway;
  ASSERT_TRUE(StartGateway(WorkerList(), {"--max-queue", "2"}, 2, &gateway));
  auto stub = GatewayStub(gateway.grpc_address);
  constexpr int kRequests = 32;
  std::vector<grpc::Status> statuses(kRequests);
  std::vector<double> seconds(kRequests);
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      // Generous: a hang shows as DEADLINE_EXCEEDED rather than a stuck test.
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      v1::GenerateResponse response;
      const auto sent = Clock::now();
      statuses[i] = stub->Generate(&ctx, SampledRequest("Tell me a story about a dragon", 16, i), &response);
      seconds[i] = SecondsSince(sent);
      if (statuses[i].ok()) EXPECT_EQ(response.usage().completion_tokens(), 16);
    });
  }
  for (auto& t : threads) t.join();
  const double total = SecondsSince(start);
  int ok = 0;
  int exhausted = 0;
  double slowest_exhausted = 0;
  double fastest_ok = 1e9;
  double slowest_ok = 0;
  for (int i = 0; i < kRequests; ++i) {
    if (statuses[i].ok()) {
      ++ok;
      fastest_ok = std::min(fastest_ok, seconds[i]);
      slowest_ok = std::max(slowest_ok, seconds[i]);
    } else {
      EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << statuses[i].error_message();
      EXPECT_NE(statuses[i].error_message().find("queue is full"), std::string::npos) << statuses[i].error_message();
      ++exhausted;
      slowest_exhausted = std::max(slowest_exhausted, seconds[i]);
    }
  }
  printf("[ measured ] overload: %d OK (%.2f..%.2f s), %d RESOURCE_EXHAUSTED (slowest %.3f s), all done in %.2f s\n",
         ok, fastest_ok, slowest_ok, exhausted, slowest_exhausted, total);
  EXPECT_GT(ok, 0);
  EXPECT_GT(exhausted, 0);
  // Refusals answer before the admitted requests finish: nobody waits in a
  // queue only to be refused.
  EXPECT_LT(slowest_exhausted, slowest_ok);
  // The gateway still serves after the flood.
  grpc::ClientContext ctx;
  v1::GenerateResponse response;
  EXPECT_TRUE(stub->Generate(&ctx, SampledRequest("Hello", 2, 7), &response).ok());
}

// Sends `count` concurrent 4-token requests; true if all were OK.
bool SendConcurrently(v1::Gateway::Stub* stub, int count, uint64_t seed) {
  std::vector<grpc::Status> statuses(count);
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      v1::GenerateResponse response;
      statuses[i] = stub->Generate(&ctx, SampledRequest("The weather today is", 4, seed + i), &response);
    });
  }
  for (auto& t : threads) t.join();
  bool all_ok = true;
  for (const grpc::Status& status : statuses) {
    EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
    all_ok = all_ok && status.ok();
  }
  return all_ok;
}

// kill -9 of a worker with long streams running on it. Its streams end
// UNAVAILABLE promptly, new requests go to the survivor, and a worker
// restarted on the same port is used again (this also restores the suite's
// two workers).
TEST_F(GatewayAcceptanceTest, KillNineOfAWorkerMidStream) {
  auto stub = GatewayStub(gateway_->grpc_address);

  constexpr int kStreams = 4;
  std::atomic<int> started{0};
  std::vector<StreamResult> results(kStreams);
  std::vector<std::atomic<bool>> done(kStreams);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  for (int i = 0; i < kStreams; ++i) {
    done[i] = false;
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts[i]->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      results[i] =
          StreamOnce(stub.get(), SampledRequest("Write a very long story:", 200, 300 + i), contexts[i].get(), &started);
      done[i].store(true, std::memory_order_release);
    });
  }
  const auto wait_end = Clock::now() + std::chrono::seconds(60);
  while (started.load() < kStreams && Clock::now() < wait_end) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // The gateway batches concurrent requests into one worker call, so the
  // streams may all sit on either worker: the victim is whichever runs most.
  const double running[2] = {MetricValue(workers_[0].metrics_address, "polar_requests_running"),
                             MetricValue(workers_[1].metrics_address, "polar_requests_running")};
  const int victim_index = running[1] > running[0] ? 1 : 0;
  Worker& victim = workers_[victim_index];
  Worker& survivor = workers_[1 - victim_index];
  const int victim_port = std::stoi(victim.grpc_address.substr(victim.grpc_address.rfind(':') + 1));
  const double on_victim = running[victim_index];
  printf("[ measured ] streams running before the kill: victim %.0f, survivor %.0f\n", on_victim,
         running[1 - victim_index]);
  if (started.load() < kStreams || on_victim <= 0) {
    for (auto& context : contexts) context->TryCancel();
    for (auto& t : threads) t.join();
    FAIL() << "the streams never started on a worker (" << started.load() << " started)";
  }

  const auto killed = Clock::now();
  EXPECT_EQ(victim.process->SignalAndWait(SIGKILL, std::chrono::seconds(10)), -1);
  // Wait (generously) for the victim's streams to end; the survivor's keep
  // going and are cancelled afterwards (their 200 tokens would only slow us).
  int unavailable = 0;
  double latest_unavailable = 0;
  const auto give_up = killed + std::chrono::seconds(10);
  while (Clock::now() < give_up) {
    unavailable = 0;
    latest_unavailable = 0;
    for (int i = 0; i < kStreams; ++i) {
      if (!done[i].load(std::memory_order_acquire)) continue;
      if (results[i].status.error_code() != grpc::StatusCode::UNAVAILABLE) continue;
      ++unavailable;
      latest_unavailable =
          std::max(latest_unavailable, std::chrono::duration<double>(results[i].ended - killed).count());
    }
    if (unavailable >= on_victim) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int i = 0; i < kStreams; ++i) {
    if (!done[i].load(std::memory_order_acquire)) contexts[i]->TryCancel();
  }
  for (auto& t : threads) t.join();
  printf("[ measured ] kill -9 -> UNAVAILABLE: %d stream(s), the last %.3f s after the kill\n", unavailable,
         latest_unavailable);
  EXPECT_EQ(unavailable, static_cast<int>(on_victim));
  EXPECT_LT(latest_unavailable, 2.0);  // the acceptance bound
  for (int i = 0; i < kStreams; ++i) {
    const grpc::StatusCode code = results[i].status.error_code();
    EXPECT_TRUE(code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::CANCELLED ||
                code == grpc::StatusCode::OK)
        << i << ": " << code << " " << results[i].status.error_message();
    if (code == grpc::StatusCode::UNAVAILABLE) EXPECT_FALSE(results[i].status.error_message().empty());
  }

  // New requests go to the survivor and succeed (the gateway may not know
  // yet that the victim is gone: such requests had not started, so they are
  // re-dispatched).
  const double survivor_before = GeneratedTokens(survivor);
  const auto after_kill = Clock::now();
  EXPECT_TRUE(SendConcurrently(stub.get(), 6, 500));
  printf("[ measured ] 6 requests right after the kill: %.2f s\n", SecondsSince(after_kill));
  // The worker's counter may trail the events the gateway already got: poll.
  double survivor_gained = 0;
  for (int i = 0; i < 100 && survivor_gained < 6 * 4; ++i) {
    survivor_gained = GeneratedTokens(survivor) - survivor_before;
    if (survivor_gained < 6 * 4) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GE(survivor_gained, 6 * 4);
  EXPECT_TRUE(WaitWorkersReady(gateway_->grpc_address, 1, std::chrono::seconds(10)));

  // A worker restarted on the same port is used again.
  const auto restart = Clock::now();
  ASSERT_TRUE(StartWorker(victim_port, &victim)) << "could not restart a worker on port " << victim_port;
  ASSERT_TRUE(WaitWorkersReady(gateway_->grpc_address, 2, std::chrono::seconds(60)));
  printf("[ measured ] restarted worker ready in the gateway after %.2f s\n", SecondsSince(restart));
  double restarted_tokens = 0;
  for (int round = 0; round < 5 && restarted_tokens <= 0; ++round) {
    ASSERT_TRUE(SendConcurrently(stub.get(), 8, 600 + 8 * round));
    restarted_tokens = GeneratedTokens(victim);
  }
  EXPECT_GT(restarted_tokens, 0) << "the restarted worker never got work";
}

// SIGTERM to a gateway with streams in flight: it stops taking new
// requests, every stream it had runs to its last token, and it exits 0.
TEST_F(GatewayAcceptanceTest, SigtermDrainsInFlightStreamsAndExitsZero) {
  Gateway gateway;
  ASSERT_TRUE(StartGateway(WorkerList(), {"--drain-grace-seconds", "120"}, 2, &gateway));
  auto stub = GatewayStub(gateway.grpc_address);
  constexpr int kStreams = 16;
  constexpr int kTokens = 24;
  std::atomic<int> started{0};
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
      results[i] = StreamOnce(stub.get(), SampledRequest("Tell me about the sea", kTokens, 700 + i), &ctx, &started);
    });
  }
  const auto wait_end = Clock::now() + std::chrono::seconds(60);
  while (started.load() < kStreams && Clock::now() < wait_end) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(started.load(), kStreams) << "not every stream started";

  const auto signalled = Clock::now();
  kill(gateway.process->pid(), SIGTERM);
  // Draining: the gateway takes no new request (its health is NOT_SERVING
  // and new calls fail) while the old ones run on.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GenerateResponse response;
    const grpc::Status late = stub->Generate(&ctx, SampledRequest("Hello", 2, 1), &response);
    EXPECT_EQ(late.error_code(), grpc::StatusCode::UNAVAILABLE) << late.error_message();
  }
  const int exit_code = gateway.process->SignalAndWait(SIGTERM, std::chrono::seconds(120));
  const double drain_seconds = SecondsSince(signalled);
  for (auto& t : threads) t.join();
  int complete = 0;
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_code() << " "
                                        << results[i].status.error_message();
    EXPECT_EQ(results[i].finish, v1::FINISH_REASON_LENGTH) << i;
    EXPECT_EQ(results[i].ids.size(), static_cast<size_t>(kTokens)) << i;
    if (results[i].status.ok() && results[i].ids.size() == static_cast<size_t>(kTokens)) ++complete;
  }
  printf("[ measured ] SIGTERM with %d streams in flight: %d complete, exit code %d after %.2f s\n", kStreams,
         complete, exit_code, drain_seconds);
  EXPECT_EQ(exit_code, 0);
}

// Requests queued on a worker that dies before starting them are
// re-dispatched to another worker and complete there; the one that had
// started ends UNAVAILABLE. Worker A runs one sequence at a time, so three
// requests wait in its queue; worker B joins only after they were sent.
TEST_F(GatewayAcceptanceTest, RequestsNotStartedOnAKilledWorkerAreRedispatched) {
  Worker a;
  ASSERT_TRUE(StartWorker(0, &a, {"--max-num-seqs", "1"}));
  const int b_port = UnusedPort();
  ASSERT_GT(b_port, 0);
  const std::string b_address = absl::StrCat("127.0.0.1:", b_port);
  Gateway gateway;
  ASSERT_TRUE(StartGateway(a.grpc_address + "," + b_address, {}, 1, &gateway));
  auto stub = GatewayStub(gateway.grpc_address);

  // The long stream runs on A...
  std::atomic<int> long_started{0};
  StreamResult long_result;
  grpc::ClientContext long_ctx;
  long_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  std::thread long_thread([&] {
    long_result = StreamOnce(stub.get(), SampledRequest("Write a very long story:", 2000, 11), &long_ctx, &long_started);
  });
  const auto start_end = Clock::now() + std::chrono::seconds(60);
  while (long_started.load() == 0 && Clock::now() < start_end) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(long_started.load(), 1);
  // ...and three more wait behind it in A's queue.
  constexpr int kQueued = 3;
  constexpr int kTokens = 8;
  std::vector<StreamResult> queued(kQueued);
  std::vector<std::thread> queued_threads;
  for (int i = 0; i < kQueued; ++i) {
    queued_threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
      queued[i] = StreamOnce(stub.get(), SampledRequest("The capital of France is", kTokens, 20 + i), &ctx);
    });
  }
  const auto queue_end = Clock::now() + std::chrono::seconds(30);
  double waiting = 0;
  while (Clock::now() < queue_end && (waiting = MetricValue(a.metrics_address, "polar_requests_waiting")) < kQueued) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(waiting, kQueued) << "the requests never queued on worker A";

  Worker b;
  ASSERT_TRUE(StartWorker(b_port, &b)) << "worker B did not start on port " << b_port;
  ASSERT_TRUE(WaitWorkersReady(gateway.grpc_address, 2, std::chrono::seconds(60)));
  const double b_before = GeneratedTokens(b);

  const auto killed = Clock::now();
  EXPECT_EQ(a.process->SignalAndWait(SIGKILL, std::chrono::seconds(10)), -1);
  for (auto& t : queued_threads) t.join();
  const double redispatch_seconds = SecondsSince(killed);
  long_thread.join();
  EXPECT_EQ(long_result.status.error_code(), grpc::StatusCode::UNAVAILABLE) << long_result.status.error_message();
  EXPECT_GT(long_result.ids.size(), 0u);
  for (int i = 0; i < kQueued; ++i) {
    EXPECT_TRUE(queued[i].status.ok()) << i << ": " << queued[i].status.error_message();
    EXPECT_EQ(queued[i].ids.size(), static_cast<size_t>(kTokens)) << i;
    EXPECT_EQ(queued[i].finish, v1::FINISH_REASON_LENGTH) << i;
  }
  // B generated them (its counter may trail the events: poll briefly).
  double b_gained = 0;
  for (int i = 0; i < 100 && b_gained < kQueued * kTokens; ++i) {
    b_gained = GeneratedTokens(b) - b_before;
    if (b_gained < kQueued * kTokens) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  printf("[ measured ] kill -9 with %d requests queued on the victim: all re-dispatched and done %.2f s after the kill; "
         "the started one ended %s after %zu tokens\n",
         kQueued, redispatch_seconds, long_result.status.ok() ? "OK" : "UNAVAILABLE", long_result.ids.size());
  EXPECT_GE(b_gained, kQueued * kTokens);
}

// Writes a hosts file (one "IP NAME" line per address) for dnsmasq.
void WriteHostsFile(const std::string& path, const std::string& name, const std::vector<std::string>& ips) {
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr) << path;
  for (const std::string& ip : ips) fprintf(f, "%s %s\n", ip.c_str(), name.c_str());
  fclose(f);
}

// Workers found through DNS: a real DNS server (dnsmasq on loopback) answers
// the worker Service's name (k8s/: headless Service polar-worker in namespace
// polar) with one A record per worker, as Kubernetes does. Records added
// later are picked up (all three workers take work), and a record removed
// drops its worker although that worker still runs.
TEST(GatewayDnsDiscoveryTest, SeveralARecordsAreSeveralWorkersAndChangesArePickedUp) {
  const std::string dnsmasq = "/usr/sbin/dnsmasq";
  if (!std::filesystem::exists(dnsmasq)) GTEST_SKIP() << "dnsmasq is not installed (scripts/install-deps)";
  if (!std::filesystem::exists(std::string(POLAR_BIN_DIR) + "/polar-gateway") ||
      !std::filesystem::exists(POLAR_DEFAULT_MODEL)) {
    GTEST_SKIP() << "binaries or the default model missing";
  }
  const std::string name = "polar-worker.polar.svc.cluster.local";
  const std::string hosts = (std::filesystem::temp_directory_path() /
                             absl::StrCat("polar-dns-test-", getpid(), ".hosts")).string();
  WriteHostsFile(hosts, name, {"127.0.0.1"});
  const int dns_port = UnusedPort();
  const std::string dns_server = absl::StrCat("127.0.0.1:", dns_port);
  ChildProcess dns;
  ASSERT_TRUE(dns.Start({dnsmasq, "--keep-in-foreground", absl::StrCat("--port=", dns_port),
                         "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                         "--addn-hosts=" + hosts, "--pid-file=", "--user=root", "--log-facility=/dev/null"}));
  // The workers listen on the same port, on three loopback addresses.
  const int port = UnusedPort();
  const std::string port_text = std::to_string(port);
  auto resolve = [&] { return ResolveAllAddresses(name, port_text, dns_server, absl::Seconds(2)); };
  absl::StatusOr<std::vector<std::string>> resolved;
  for (int i = 0; i < 50 && !(resolved = resolve()).ok(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(*resolved, std::vector<std::string>{absl::StrCat("127.0.0.1:", port)});

  constexpr int kWorkers = 3;
  Worker workers[kWorkers];
  std::vector<std::string> ips, addresses;
  for (int w = 0; w < kWorkers; ++w) {
    ips.push_back(absl::StrCat("127.0.0.", w + 1));
    addresses.push_back(absl::StrCat(ips.back(), ":", port));
    ASSERT_TRUE(StartWorker(port, &workers[w], {}, ips.back()));
  }
  Gateway gateway;
  // Fully qualified (trailing dot), as k8s/base/gateway-deployment.yaml
  // writes it: no search-domain lookups first.
  absl::StatusOr<std::vector<std::string>> absolute =
      ResolveAllAddresses(name + ".", port_text, dns_server, absl::Seconds(2));
  ASSERT_TRUE(absolute.ok()) << absolute.status();
  EXPECT_EQ(*absolute, *resolved);
  ASSERT_TRUE(StartGateway(absl::StrCat("dns:///", name, ".:", port),
                           {"--dns-server", dns_server, "--dns-refresh-seconds", "0.5", "--max-batch", "1"}, 1,
                           &gateway));
  auto stub = GatewayStub(gateway.grpc_address);

  // Two more A records: two more workers.
  WriteHostsFile(hosts, name, ips);
  kill(dns.pid(), SIGHUP);  // dnsmasq re-reads its hosts files
  int known = 0;
  ASSERT_TRUE(WaitWorkersReady(gateway.grpc_address, kWorkers, std::chrono::seconds(30), &known));
  EXPECT_EQ(known, kWorkers);
  std::vector<std::string> now = resolve().value_or(std::vector<std::string>{});
  std::sort(now.begin(), now.end());
  EXPECT_EQ(now, addresses);
  constexpr int kRequests = 12;
  double before[kWorkers], gained[kWorkers] = {};
  for (int w = 0; w < kWorkers; ++w) before[w] = GeneratedTokens(workers[w]);
  EXPECT_TRUE(SendConcurrently(stub.get(), kRequests, 900));
  for (int i = 0; i < 100; ++i) {
    double total = 0;
    for (int w = 0; w < kWorkers; ++w) total += gained[w] = GeneratedTokens(workers[w]) - before[w];
    if (total >= kRequests * 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  printf("[ measured ] DNS: %d A records -> %d workers; %d requests gave %.0f, %.0f and %.0f tokens\n", kWorkers,
         kWorkers, kRequests, gained[0], gained[1], gained[2]);
  for (int w = 0; w < kWorkers; ++w) EXPECT_GT(gained[w], 0) << "worker " << ips[w] << " got no work";

  // The first record removed: its worker leaves the pool though it still runs.
  WriteHostsFile(hosts, name, {ips[1], ips[2]});
  kill(dns.pid(), SIGHUP);
  ASSERT_TRUE(WaitWorkersReady(gateway.grpc_address, kWorkers - 1, std::chrono::seconds(30), &known));
  EXPECT_EQ(known, kWorkers - 1);
  const double first_before = GeneratedTokens(workers[0]);
  EXPECT_TRUE(SendConcurrently(stub.get(), 4, 950));
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // past a metrics mirror period
  EXPECT_EQ(GeneratedTokens(workers[0]), first_before) << "a worker no longer in DNS got work";
  std::filesystem::remove(hosts);
}

}  // namespace
}  // namespace polar
