// polar-worker as the gateway uses it: the real binary on a loopback port,
// driven through the generated C++ stub. Checks that a streamed batch gives
// exactly ModelRunner::Generate's tokens (greedy and seeded), that Cancel and
// a client-side cancel free the KV blocks, that a malformed request is
// refused without hurting the worker, that model info carries the tokenizer,
// that WatchLoad streams reports, that /metrics exports the documented names
// (and answers while the model still loads), and that SIGTERM lets an
// in-flight request finish and exits 0.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "engine/model/checkpoint.h"
#include "engine/model/head_routers.h"
#include "engine/runtime/model_runner.h"
#include "gtest/gtest.h"
#include "polar/v1/worker.grpc.pb.h"
#include "tests/integration/service_processes.h"
#include "tests/integration/worker_process.h"

namespace polar {
namespace {

using testing::UnusedPort;
using testing::WorkerProcess;

std::string DefaultModel() { return POLAR_DEFAULT_MODEL; }
constexpr char kKvBytes[] = "67108864";
constexpr int64_t kKvBytesValue = 67108864;

struct Finished {
  std::vector<int32_t> tokens;
  v1::RequestUpdate final_update;
  int finals = 0;
  int started = 0;
  bool token_before_started = false;  // a token arrived in an update before the started one
};

// Reads a whole Generate stream into per-request results.
grpc::Status ReadAll(grpc::ClientReaderInterface<v1::WorkerEvent>* reader, std::map<std::string, Finished>* out) {
  v1::WorkerEvent event;
  while (reader->Read(&event)) {
    for (const v1::RequestUpdate& u : event.updates()) {
      Finished& f = (*out)[u.request_id()];
      if (u.token_ids_size() > 0 && f.started == 0 && !u.started()) f.token_before_started = true;
      f.tokens.insert(f.tokens.end(), u.token_ids().begin(), u.token_ids().end());
      if (u.started()) ++f.started;
      if (u.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
        ++f.finals;
        f.final_update = u;
      }
    }
  }
  return reader->Finish();
}

v1::WorkerRequest MakeRequest(const std::string& id, std::vector<int32_t> prompt, float temperature,
                              uint64_t seed, int max_tokens) {
  v1::WorkerRequest r;
  r.set_request_id(id);
  for (int32_t t : prompt) r.add_prompt_token_ids(t);
  r.mutable_sampling()->set_temperature(temperature);
  r.mutable_sampling()->set_top_k(temperature > 0 ? 40 : 0);
  r.mutable_sampling()->set_top_p(1.0f);
  r.mutable_sampling()->set_repetition_penalty(1.0f);
  r.mutable_sampling()->set_seed(seed);
  r.set_max_tokens(max_tokens);
  r.set_ignore_eos(true);
  return r;
}

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(DefaultModel())) {
      GTEST_SKIP() << "default model not fetched (scripts/fetch-model): " << DefaultModel();
    }
    std::string error;
    ASSERT_TRUE(worker_.Start({"--model", DefaultModel(), "--threads", "2", "--kv-cache-bytes", kKvBytes,
                               "--drain-grace-seconds", "60"},
                              &error))
        << error;
    ASSERT_TRUE(worker_.WaitServing()) << "worker never became SERVING";
    stub_ = v1::Worker::NewStub(worker_.channel());
  }

  v1::LoadReport Load() {
    grpc::ClientContext context;
    v1::LoadReport report;
    EXPECT_TRUE(stub_->GetLoad(&context, v1::GetLoadRequest(), &report).ok());
    return report;
  }

  WorkerProcess worker_;
  std::unique_ptr<v1::Worker::Stub> stub_;
  int exit_code_ = -1;
};

TEST_F(WorkerTest, StreamedBatchMatchesModelRunnerGenerate) {
  v1::WorkerBatch batch;
  *batch.add_requests() = MakeRequest("greedy-a", {1, 504, 3458, 282}, 0.0f, 0, 12);
  *batch.add_requests() = MakeRequest("seeded", {1, 2020, 314, 253, 1345}, 0.8f, 7, 12);
  *batch.add_requests() = MakeRequest("greedy-b", {9690, 28, 540}, 0.0f, 0, 9);

  grpc::ClientContext context;
  std::map<std::string, Finished> got;
  grpc::Status status = ReadAll(stub_->Generate(&context, batch).get(), &got);
  ASSERT_TRUE(status.ok()) << status.error_message();

  // The same requests in-process.
  absl::StatusOr<Checkpoint> checkpoint = OpenCheckpoint(DefaultModel());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  RunnerOptions options;
  options.threads = 2;
  options.kv_cache_bytes = kKvBytesValue;
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner = ModelRunner::Create(*std::move(checkpoint), options);
  ASSERT_TRUE(runner.ok()) << runner.status();
  std::vector<GenerationRequest> requests;
  for (const v1::WorkerRequest& r : batch.requests()) {
    GenerationRequest g;
    g.prompt.assign(r.prompt_token_ids().begin(), r.prompt_token_ids().end());
    g.params.temperature = r.sampling().temperature();
    g.params.top_k = r.sampling().top_k();
    g.params.top_p = r.sampling().top_p();
    g.params.repetition_penalty = r.sampling().repetition_penalty();
    g.params.seed = r.sampling().seed();
    g.params.ignore_eos = true;
    g.params.max_tokens = r.max_tokens();
    requests.push_back(g);
  }
  absl::StatusOr<std::vector<GenerationResult>> expected = (*runner)->Generate(requests, {});
  ASSERT_TRUE(expected.ok()) << expected.status();

  for (int i = 0; i < batch.requests_size(); ++i) {
    const std::string& id = batch.requests(i).request_id();
    SCOPED_TRACE(id);
    const Finished& f = got[id];
    EXPECT_EQ(f.finals, 1);
    EXPECT_EQ(f.started, 1);
    EXPECT_FALSE(f.token_before_started);
    EXPECT_EQ(f.final_update.finish_reason(), v1::FINISH_REASON_LENGTH);
    // The engine's admission time: after receipt, before the first token.
    const v1::RequestStats& stats = f.final_update.stats();
    EXPECT_GE(stats.queue_seconds(), 0.0);
    EXPECT_LE(stats.queue_seconds(), stats.time_to_first_token_seconds());
    EXPECT_EQ(stats.preemptions(), 0);  // the pool holds all three at once
    EXPECT_EQ(f.tokens, (*expected)[i].tokens);
    EXPECT_EQ(f.final_update.stats().completion_tokens(), batch.requests(i).max_tokens());
    EXPECT_EQ(f.final_update.stats().prompt_tokens(), batch.requests(i).prompt_token_ids_size());
  }
}

TEST_F(WorkerTest, ConcurrentCallsEachGetTheirOwnTokens) {
  constexpr int kCalls = 4;
  std::vector<std::map<std::string, Finished>> got(kCalls);
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<std::thread> threads;
  for (int c = 0; c < kCalls; ++c) {
    threads.emplace_back([&, c] {
      v1::WorkerBatch batch;
      *batch.add_requests() = MakeRequest(absl::StrCat("c", c, "-greedy"), {1, 504, 3458, 282}, 0.0f, 0, 6);
      *batch.add_requests() = MakeRequest(absl::StrCat("c", c, "-seeded"), {1, 2020, 314}, 0.8f, 11, 6);
      grpc::ClientContext context;
      statuses[c] = ReadAll(stub_->Generate(&context, batch).get(), &got[c]);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int c = 0; c < kCalls; ++c) {
    SCOPED_TRACE(c);
    ASSERT_TRUE(statuses[c].ok()) << statuses[c].error_message();
    ASSERT_EQ(got[c].size(), 2u);  // only this call's requests
    const Finished& greedy = got[c][absl::StrCat("c", c, "-greedy")];
    const Finished& seeded = got[c][absl::StrCat("c", c, "-seeded")];
    EXPECT_EQ(greedy.tokens.size(), 6u);
    EXPECT_EQ(seeded.tokens.size(), 6u);
    // Same request, same seed: same tokens, whatever else shared the steps.
    EXPECT_EQ(greedy.tokens, got[0]["c0-greedy"].tokens);
    EXPECT_EQ(seeded.tokens, got[0]["c0-seeded"].tokens);
  }
}

TEST_F(WorkerTest, CancelFreesKvBlocks) {
  const v1::LoadReport before = Load();
  ASSERT_GT(before.total_kv_blocks(), 0);
  ASSERT_EQ(before.free_kv_blocks(), before.total_kv_blocks());

  // Explicit Cancel RPC mid-stream.
  {
    v1::WorkerBatch batch;
    *batch.add_requests() = MakeRequest("long", {1, 504, 3458}, 0.0f, 0, 400);
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, batch);
    v1::WorkerEvent event;
    bool saw_token = false;
    while (!saw_token && reader->Read(&event)) {
      for (const auto& u : event.updates()) saw_token |= u.token_ids_size() > 0;
    }
    ASSERT_TRUE(saw_token);
    EXPECT_LT(Load().free_kv_blocks(), before.total_kv_blocks());
    grpc::ClientContext cancel_context;
    v1::CancelRequest cancel;
    cancel.add_request_ids("long");
    cancel.add_request_ids("never-seen");
    v1::CancelResponse cancelled;
    ASSERT_TRUE(stub_->Cancel(&cancel_context, cancel, &cancelled).ok());
    ASSERT_EQ(cancelled.cancelled_ids_size(), 1);
    EXPECT_EQ(cancelled.cancelled_ids(0), "long");
    std::map<std::string, Finished> got;
    ASSERT_TRUE(ReadAll(reader.get(), &got).ok());
    EXPECT_EQ(got["long"].final_update.finish_reason(), v1::FINISH_REASON_CANCELLED);
    EXPECT_LT(got["long"].tokens.size(), 400u);
    // Blocks are released before the final event is delivered.
    EXPECT_EQ(Load().free_kv_blocks(), before.total_kv_blocks());
  }

  // The client cancels its call: the worker cancels the request.
  {
    v1::WorkerBatch batch;
    *batch.add_requests() = MakeRequest("abandoned", {1, 504, 3458}, 0.0f, 0, 400);
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, batch);
    v1::WorkerEvent event;
    ASSERT_TRUE(reader->Read(&event));
    context.TryCancel();
    while (reader->Read(&event)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    bool freed = false;
    for (int i = 0; i < 600 && !freed; ++i) {
      const v1::LoadReport load = Load();
      freed = load.free_kv_blocks() == before.total_kv_blocks() && load.running() == 0;
      if (!freed) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(freed) << "KV blocks not released after the client cancelled";
  }
}

TEST_F(WorkerTest, MalformedRequestsAreRefusedAndWorkerKeepsServing) {
  {
    grpc::ClientContext context;
    std::map<std::string, Finished> got;
    grpc::Status status = ReadAll(stub_->Generate(&context, v1::WorkerBatch()).get(), &got);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    v1::WorkerBatch batch;
    *batch.add_requests() = MakeRequest("bad-id", {1, 999999}, 0.0f, 0, 4);
    v1::WorkerRequest bad_sampling = MakeRequest("bad-top-p", {1, 2}, 0.0f, 0, 4);
    bad_sampling.mutable_sampling()->set_top_p(0.0f);
    *batch.add_requests() = bad_sampling;
    *batch.add_requests() = MakeRequest("good", {1, 504}, 0.0f, 0, 3);
    *batch.add_requests() = MakeRequest("good", {1, 504}, 0.0f, 0, 3);  // duplicate id
    grpc::ClientContext context;
    std::map<std::string, Finished> got;
    ASSERT_TRUE(ReadAll(stub_->Generate(&context, batch).get(), &got).ok());
    for (const char* id : {"bad-id", "bad-top-p"}) {
      SCOPED_TRACE(id);
      EXPECT_EQ(got[id].finals, 1);
      EXPECT_EQ(got[id].final_update.finish_reason(), v1::FINISH_REASON_ERROR);
      EXPECT_EQ(got[id].final_update.error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    }
    // The first "good" runs; its duplicate fails with ALREADY_EXISTS. Both
    // report under the same id, so two finals arrive for it.
    EXPECT_EQ(got["good"].finals, 2);
    EXPECT_EQ(got["good"].tokens.size(), 3u);
  }
  EXPECT_EQ(worker_.HealthStatus(), "SERVING");
  v1::WorkerBatch batch;
  *batch.add_requests() = MakeRequest("after", {1, 504}, 0.0f, 0, 2);
  grpc::ClientContext context;
  std::map<std::string, Finished> got;
  ASSERT_TRUE(ReadAll(stub_->Generate(&context, batch).get(), &got).ok());
  EXPECT_EQ(got["after"].final_update.finish_reason(), v1::FINISH_REASON_LENGTH);
}

TEST_F(WorkerTest, ModelInfoCarriesTheTokenizer) {
  grpc::ClientContext info_context;
  v1::WorkerInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&info_context, v1::GetWorkerInfoRequest(), &info).ok());
  EXPECT_EQ(info.model().architecture(), "llama");
  EXPECT_GT(info.model().vocab_size(), 0);
  EXPECT_FALSE(info.model().end_of_generation_ids().empty());
  EXPECT_FALSE(info.tokenizer_digest().empty());
  EXPECT_FALSE(info.instance_id().empty());
  EXPECT_FALSE(info.version().empty());

  grpc::ClientContext context;
  context.set_wait_for_ready(true);
  v1::Tokenizer tokenizer;
  ASSERT_TRUE(stub_->GetTokenizer(&context, v1::GetTokenizerRequest(), &tokenizer).ok());
  EXPECT_EQ(tokenizer.tokens_size(), info.model().vocab_size());
  EXPECT_EQ(tokenizer.token_types_size(), tokenizer.tokens_size());
  EXPECT_GT(tokenizer.merges_size(), 0);
  EXPECT_FALSE(tokenizer.pre_tokenizer().empty());
}

TEST_F(WorkerTest, WatchLoadStreamsReportsUntilCancelled) {
  grpc::ClientContext context;
  v1::WatchLoadRequest request;
  request.mutable_interval()->set_nanos(20 * 1000 * 1000);
  auto reader = stub_->WatchLoad(&context, request);
  const v1::LoadReport pulled = Load();
  v1::LoadReport report;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(reader->Read(&report));
    EXPECT_EQ(report.instance_id(), pulled.instance_id());
    EXPECT_TRUE(report.ready());
    EXPECT_FALSE(report.draining());
    EXPECT_EQ(report.total_kv_blocks(), pulled.total_kv_blocks());
    EXPECT_GT(report.kv_block_size(), 0);
  }
  context.TryCancel();
  while (reader->Read(&report)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(worker_.HealthStatus(), "SERVING");
}

TEST_F(WorkerTest, MetricsAreExported) {
  v1::WorkerBatch batch;
  *batch.add_requests() = MakeRequest("m", {1, 504, 3458}, 0.0f, 0, 4);
  grpc::ClientContext context;
  std::map<std::string, Finished> got;
  ASSERT_TRUE(ReadAll(stub_->Generate(&context, batch).get(), &got).ok());

  httplib::Client client("127.0.0.1", worker_.metrics_port());
  // The counters are mirrored a few times a second: wait for the tokens.
  std::string body;
  for (int i = 0; i < 100; ++i) {
    httplib::Result result = client.Get("/metrics");
    ASSERT_TRUE(result);
    ASSERT_EQ(result->status, 200);
    body = result->body;
    if (body.find("polar_generation_tokens_total 0\n") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (const char* name :
       {"polar_requests_running ", "polar_requests_waiting ", "polar_kv_cache_usage_ratio ",
        "polar_prompt_tokens_total ", "polar_generation_tokens_total ", "polar_preemptions_total ",
        "polar_step_seconds_bucket{phase=\"prefill\",le=", "polar_step_seconds_sum{phase=\"decode\"}",
        "polar_batch_size_bucket{le=\"1\"}", "polar_attention_heads_active_total{layer=\"0\"}",
        "polar_attention_heads_total{layer=\"0\"}", "polar_build_info{version="}) {
    EXPECT_NE(body.find(name), std::string::npos) << name << " missing in\n" << body;
  }
  EXPECT_EQ(body.find("polar_generation_tokens_total 0\n"), std::string::npos) << body;
  // The histograms are observed at each step, not pumped: the prompt's prefill
  // and at least one decode step (4 tokens) are counted by now.
  auto sample = [&body](const std::string& line_start) -> double {
    const size_t at = body.find(line_start);
    if (at == std::string::npos) return -1.0;
    return std::stod(body.substr(at + line_start.size()));
  };
  EXPECT_GT(sample("polar_step_seconds_bucket{phase=\"prefill\",le=\"+Inf\"} "), 0.0) << body;
  EXPECT_GT(sample("polar_step_seconds_bucket{phase=\"decode\",le=\"+Inf\"} "), 0.0) << body;
  EXPECT_GT(sample("polar_step_seconds_count{phase=\"decode\"} "), 0.0) << body;
  EXPECT_GT(sample("polar_batch_size_bucket{le=\"1\"} "), 0.0) << body;
  EXPECT_GT(sample("polar_batch_size_count "), 0.0) << body;
}

TEST_F(WorkerTest, SigtermFinishesInFlightWorkAndExitsZero) {
  constexpr int kTokens = 64;
  v1::WorkerBatch batch;
  *batch.add_requests() = MakeRequest("inflight", {1, 504, 3458}, 0.0f, 0, kTokens);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, batch);
  v1::WorkerEvent event;
  ASSERT_TRUE(reader->Read(&event));
  std::map<std::string, Finished> got;
  for (const auto& u : event.updates()) got[u.request_id()].tokens.assign(u.token_ids().begin(), u.token_ids().end());
  std::thread term([this] { exit_code_ = worker_.SignalAndWait(SIGTERM); });

  // While draining: health NOT_SERVING, new batches refused. (If the
  // in-flight request already finished and the server is gone, the new batch
  // is refused all the same.)
  std::string health;
  for (int i = 0; i < 200 && health != "NOT_SERVING" && health.rfind("error", 0) != 0; ++i) {
    health = worker_.HealthStatus();
    if (health == "SERVING") std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  v1::WorkerBatch late;
  *late.add_requests() = MakeRequest("late", {1, 504}, 0.0f, 0, 2);
  grpc::ClientContext late_context;
  std::map<std::string, Finished> late_got;
  EXPECT_EQ(ReadAll(stub_->Generate(&late_context, late).get(), &late_got).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(late_got.empty());

  grpc::Status status = ReadAll(reader.get(), &got);
  term.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(got["inflight"].tokens.size(), static_cast<size_t>(kTokens));
  EXPECT_EQ(got["inflight"].final_update.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(exit_code_, 0);
}

// /metrics answers while the model is still loading, so a failed scrape
// means a dead worker, not a slow load (the PolarWorkerDown alert). The load
// is held open by a model directory whose config.json is a FIFO: reading it
// blocks until the test writes; an invalid config then ends the worker with
// an error, not a crash.
TEST(WorkerStartupTest, MetricsAnswerBeforeTheModelHasLoaded) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           absl::StrCat("polar-worker-loading-", getpid())).string();
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(std::filesystem::create_directories(dir));
  const std::string config = dir + "/config.json";
  ASSERT_EQ(mkfifo(config.c_str(), 0600), 0) << std::strerror(errno);
  const int metrics_port = UnusedPort();
  ASSERT_GT(metrics_port, 0);
  std::vector<std::string> argv = {std::string(POLAR_BIN_DIR) + "/polar-worker", "--model", dir, "--listen",
                                   "127.0.0.1:0", "--metrics-listen", absl::StrCat("127.0.0.1:", metrics_port)};
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  httplib::Client client("127.0.0.1", metrics_port);
  client.set_connection_timeout(1);
  std::string body;
  for (int i = 0; i < 200 && body.empty(); ++i) {
    if (httplib::Result result = client.Get("/metrics"); result && result->status == 200) {
      body = result->body;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  EXPECT_NE(body.find("polar_build_info{version="), std::string::npos) << "no /metrics while loading: " << body;
  EXPECT_EQ(waitpid(pid, nullptr, WNOHANG), 0) << "the worker did not wait for its model";
  {
    std::ofstream fifo(config);  // unblocks the reader
    fifo << "{}";
  }
  int status = 0;
  for (int i = 0; i < 200 && waitpid(pid, &status, WNOHANG) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ADD_FAILURE() << "the worker did not exit after an invalid config";
  }
  EXPECT_TRUE(WIFEXITED(status)) << "the worker crashed on an invalid config";
  EXPECT_EQ(WEXITSTATUS(status), 1);
  std::filesystem::remove_all(dir);
}

TEST(WorkerNoTokenizerTest, ServesIdsAndAnswersNotFoundForTheTokenizer) {
  WorkerProcess worker;
  std::string error;
  ASSERT_TRUE(worker.Start({"--model", std::string(POLAR_TEST_DATA_DIR) + "/models/tiny-llama", "--threads", "1",
                            "--kv-cache-bytes", "4194304"},
                           &error))
      << error;
  ASSERT_TRUE(worker.WaitServing());
  // The warm-up step served no request: the token counters start at zero
  // (waited past a few mirror periods so growth would have shown).
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  httplib::Client metrics("127.0.0.1", worker.metrics_port());
  httplib::Result scrape = metrics.Get("/metrics");
  ASSERT_TRUE(scrape);
  EXPECT_NE(scrape->body.find("\npolar_generation_tokens_total 0\n"), std::string::npos) << scrape->body;
  EXPECT_NE(scrape->body.find("\npolar_prompt_tokens_total 0\n"), std::string::npos) << scrape->body;

  auto stub = v1::Worker::NewStub(worker.channel());
  grpc::ClientContext context;
  v1::Tokenizer tokenizer;
  EXPECT_EQ(stub->GetTokenizer(&context, v1::GetTokenizerRequest(), &tokenizer).error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext info_context;
  v1::WorkerInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&info_context, v1::GetWorkerInfoRequest(), &info).ok());
  EXPECT_TRUE(info.tokenizer_digest().empty());

  // A load watcher open at shutdown does not hold the worker up.
  grpc::ClientContext watch_context;
  auto watch = stub->WatchLoad(&watch_context, v1::WatchLoadRequest());
  v1::LoadReport report;
  ASSERT_TRUE(watch->Read(&report));
  EXPECT_TRUE(report.ready());
  EXPECT_EQ(worker.SignalAndWait(SIGINT), 0);
  while (watch->Read(&report)) {  // the stream ends with the worker (a hang here fails by timeout)
  }
  watch->Finish();
}

// A worker with head routers (random ones: this checks the plumbing, not
// their quality) serves fixed densities: the model facts say sparsity is
// available, a sparse request computes fewer heads in routed layers (the
// metrics show it, per head too with --per-head-metrics), and a worker
// without routers refuses a density below 1.
TEST_F(WorkerTest, DensityReachesTheEngineAndTheMetricsCountIt) {
  absl::StatusOr<Checkpoint> ck = OpenCheckpoint(DefaultModel());
  ASSERT_TRUE(ck.ok()) << ck.status();
  const ModelConfig& c = ck->config;
  HeadRouters routers = HeadRouters::DenseFor(c);
  std::mt19937 rng(1);
  std::normal_distribution<float> w(0.0f, 0.05f);
  for (int64_t l = 1; l < c.num_layers; ++l) {
    routers.dense[l] = false;
    routers.weight[l].resize(c.num_heads * c.hidden_size);
    routers.bias[l].resize(c.num_heads);
    for (float& x : routers.weight[l]) x = w(rng);
    for (float& x : routers.bias[l]) x = w(rng);
  }
  routers.default_density = 0.5f;
  const std::string path = std::filesystem::temp_directory_path().string() + "/polar_worker_test_routers_" +
                           std::to_string(getpid()) + ".safetensors";
  ASSERT_TRUE(routers.Save(path).ok());
  WorkerProcess sparse;
  std::string error;
  ASSERT_TRUE(sparse.Start({"--model", DefaultModel(), "--threads", "1", "--kv-cache-bytes", kKvBytes, "--routers",
                            path, "--per-head-metrics"},
                           &error))
      << error;
  ASSERT_TRUE(sparse.WaitServing());
  std::filesystem::remove(path);
  auto stub = v1::Worker::NewStub(sparse.channel());
  {
    grpc::ClientContext context;
    v1::WorkerInfo info;
    ASSERT_TRUE(stub->GetModelInfo(&context, v1::GetWorkerInfoRequest(), &info).ok());
    EXPECT_TRUE(info.model().sparsity_available());
    EXPECT_FLOAT_EQ(info.model().default_density(), 0.5f);
    ASSERT_EQ(info.model().dense_layers_size(), 1);
    EXPECT_EQ(info.model().dense_layers(0), 0);
  }
  v1::WorkerBatch batch;
  v1::WorkerRequest request = MakeRequest("sparse", {1, 504, 3458, 28, 1116}, 0.0f, 0, 6);
  request.mutable_density()->set_mode(v1::DENSITY_MODE_FIXED);
  request.mutable_density()->set_value(0.33f);  // 1 of 3 KV groups
  *batch.add_requests() = request;
  grpc::ClientContext context;
  std::map<std::string, Finished> got;
  ASSERT_TRUE(ReadAll(stub->Generate(&context, batch).get(), &got).ok());
  EXPECT_EQ(got["sparse"].tokens.size(), 6u);
  EXPECT_EQ(got["sparse"].final_update.finish_reason(), v1::FINISH_REASON_LENGTH);

  // The 5 prompt tokens are dense; the 5 decode tokens that ran a forward pass keep 3 of 9 heads.
  httplib::Client client("127.0.0.1", sparse.metrics_port());
  auto value = [&](const std::string& sample) -> double {
    httplib::Result r = client.Get("/metrics");
    if (!r) return -1;
    const size_t at = r->body.find("\n" + sample + " ");
    return at == std::string::npos ? -1 : std::stod(r->body.substr(at + sample.size() + 2));
  };
  // The counters are mirrored a few times a second: wait for the last step.
  for (int i = 0; i < 50 && value("polar_attention_heads_total{layer=\"1\"}") < 10 * 9; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double active = value("polar_attention_heads_active_total{layer=\"1\"}");
  EXPECT_EQ(active, 5 * 9 + 5 * 3);
  EXPECT_EQ(value("polar_attention_heads_total{layer=\"1\"}"), 10 * 9);
  EXPECT_EQ(value("polar_attention_heads_active_total{layer=\"0\"}"), 10 * 9);
  double per_head_sum = 0;
  for (int h = 0; h < 9; ++h) {
    per_head_sum += value("polar_attention_head_selected_total{layer=\"1\",head=\"" + std::to_string(h) + "\"}");
  }
  EXPECT_EQ(per_head_sum, active);

  // The fixture's worker has no routers: a sparse density is refused, a clear error.
  v1::WorkerBatch refused_batch;
  *refused_batch.add_requests() = request;
  grpc::ClientContext refused_context;
  std::map<std::string, Finished> refused;
  ReadAll(stub_->Generate(&refused_context, refused_batch).get(), &refused);
  EXPECT_EQ(refused["sparse"].final_update.finish_reason(), v1::FINISH_REASON_ERROR);
  EXPECT_NE(refused["sparse"].final_update.error().message().find("routers"), std::string::npos)
      << refused["sparse"].final_update.error().message();
}

}  // namespace
}  // namespace polar
