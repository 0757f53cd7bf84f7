// `polar bench --target` end to end: a real polar-worker (default model) and
// polar-gateway on loopback, and the real polar binary run as a subprocess
// against them. Checks the JSON report of a small closed-loop run (every
// request ok, exactly the asked output tokens, ordered percentiles) and that
// an unreachable target fails with a non-zero exit instead of hanging.
// Skips when the binaries or the model are missing.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

#include "gtest/gtest.h"
#include "polar/v1/gateway.grpc.pb.h"
#include "tests/integration/worker_process.h"

namespace polar {
namespace {

// A loopback port nobody listens on right now.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

pid_t Spawn(const std::vector<std::string>& argv, int stdout_fd, int stderr_fd) {
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(stdout_fd, STDOUT_FILENO);
    dup2(stderr_fd, STDERR_FILENO);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

// Waits up to `limit` for `pid`; its exit code, -1 if killed by a signal, or
// -2 if it was still running at the limit (then it is killed).
int WaitExit(pid_t pid, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < end) {
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -2;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct CliRun {
  int exit_code;
  std::string out, err;
};

// Runs POLAR_BIN_DIR/polar with `args`, stdout and stderr to files.
CliRun RunPolar(const std::vector<std::string>& args, const std::string& dir, std::chrono::seconds limit) {
  std::vector<std::string> argv = {std::string(POLAR_BIN_DIR) + "/polar"};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out_path = dir + "/stdout", err_path = dir + "/stderr";
  const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const pid_t pid = Spawn(argv, out, err);
  close(out);
  close(err);
  const int code = WaitExit(pid, limit);
  return {code, ReadFile(out_path), ReadFile(err_path)};
}

std::string TempDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/bench_target_test_" + name + "_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(BenchTargetTest, UnreachableTargetFailsWithoutHanging) {
  if (!std::filesystem::exists(std::string(POLAR_BIN_DIR) + "/polar")) GTEST_SKIP() << "polar is not built";
  const int port = FreePort();
  ASSERT_GT(port, 0);
  const std::string dir = TempDir("unreachable");
  const CliRun run = RunPolar({"bench", "--target", absl::StrCat("127.0.0.1:", port), "--requests", "2", "--timeout",
                               "5", "--json", dir + "/report.json"},
                              dir, std::chrono::seconds(120));
  ASSERT_NE(run.exit_code, -2) << "polar bench hung on an unreachable target";
  EXPECT_NE(run.exit_code, 0) << run.out;
  EXPECT_NE(run.err.find("cannot reach"), std::string::npos) << run.err;
}

TEST(BenchTargetTest, ClosedLoopAgainstGateway) {
  const std::string bin = POLAR_BIN_DIR;
  for (const char* name : {"polar", "polar-worker", "polar-gateway"}) {
    if (!std::filesystem::exists(bin + "/" + name)) GTEST_SKIP() << name << " is not built";
  }
  if (!std::filesystem::exists(POLAR_DEFAULT_MODEL)) {
    GTEST_SKIP() << "default model not fetched (scripts/fetch-model): " << POLAR_DEFAULT_MODEL;
  }
  // The worker listens on a port we choose so that the gateway can be told it
  // (a later --listen overrides WorkerProcess's port 0).
  const int worker_port = FreePort();
  ASSERT_GT(worker_port, 0);
  const std::string worker_address = absl::StrCat("127.0.0.1:", worker_port);
  testing::WorkerProcess worker;
  std::string error;
  ASSERT_TRUE(worker.Start({"--model", POLAR_DEFAULT_MODEL, "--listen", worker_address}, &error)) << error;
  ASSERT_TRUE(worker.WaitServing()) << "polar-worker never became SERVING";

  int gateway_out[2];
  ASSERT_EQ(pipe(gateway_out), 0);
  const pid_t gateway = Spawn({bin + "/polar-gateway", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                               "--workers", worker_address},
                              gateway_out[1], STDERR_FILENO);
  close(gateway_out[1]);
  struct Reaper {
    pid_t pid;
    int fd;
    ~Reaper() {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      close(fd);
    }
  } reaper{gateway, gateway_out[0]};
  // "polar-gateway listening grpc=HOST:PORT metrics=HOST:PORT"
  std::string line;
  pollfd pfd{gateway_out[0], POLLIN, 0};
  while (line.find('\n') == std::string::npos && poll(&pfd, 1, 60000) > 0) {
    char c[256];
    const ssize_t n = read(gateway_out[0], c, sizeof(c));
    if (n <= 0) break;
    line.append(c, n);
  }
  const size_t at = line.find("grpc=");
  ASSERT_NE(at, std::string::npos) << "polar-gateway did not start: " << line;
  const std::string gateway_address = line.substr(at + 5, line.find_first_of(" \n", at) - at - 5);

  auto stub = v1::Gateway::NewStub(grpc::CreateChannel(gateway_address, grpc::InsecureChannelCredentials()));
  bool ready = false;
  for (int i = 0; i < 600 && !ready; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ModelInfo info;
    ready = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok() && info.workers_ready() > 0;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(ready) << "the gateway never saw a ready worker";

  const std::string dir = TempDir("closed_loop");
  const std::string json_path = dir + "/report.json";
  const CliRun run = RunPolar({"bench", "--target", gateway_address, "--concurrency", "4", "--requests", "8",
                               "--prompt-tokens", "16", "--output-tokens", "8", "--seed", "7", "--timeout", "120",
                               "--json", json_path},
                              dir, std::chrono::seconds(300));
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("requests ok"), std::string::npos) << run.out;

  const nlohmann::json report = nlohmann::json::parse(ReadFile(json_path));
  EXPECT_EQ(report["requests_ok"].get<int64_t>(), 8);
  EXPECT_EQ(report["requests_failed"].get<int64_t>(), 0);
  EXPECT_EQ(report["output_tokens"].get<int64_t>(), 64);
  EXPECT_EQ(report["prompt_tokens"].get<int64_t>(), 128);
  EXPECT_GT(report["request_throughput"].get<double>(), 0);
  EXPECT_GT(report["output_tokens_per_s"].get<double>(), 0);
  EXPECT_GT(report["total_tokens_per_s"].get<double>(), report["output_tokens_per_s"].get<double>());
  EXPECT_EQ(report["ttft_s"]["count"].get<int64_t>(), 8);
  EXPECT_EQ(report["e2e_s"]["count"].get<int64_t>(), 8);
  // One gap per token after each request's first token-bearing message.
  EXPECT_GT(report["itl_s"]["count"].get<int64_t>(), 0);
  EXPECT_LE(report["itl_s"]["count"].get<int64_t>(), 8 * 7);
  for (const char* metric : {"ttft_s", "itl_s", "e2e_s"}) {
    const nlohmann::json& d = report[metric];
    EXPECT_GE(d["p50"].get<double>(), 0) << metric;
    EXPECT_LE(d["p50"].get<double>(), d["p90"].get<double>()) << metric;
    EXPECT_LE(d["p90"].get<double>(), d["p99"].get<double>()) << metric;
  }
  // A request ends after its first token arrives.
  EXPECT_LE(report["ttft_s"]["p50"].get<double>(), report["e2e_s"]["p99"].get<double>());
}

// The same load straight into an in-process engine (the baseline the
// serving benchmark compares the services with): same workload, same report.
TEST(BenchTargetTest, ClosedLoopIntoTheEngineInProcess) {
  if (!std::filesystem::exists(std::string(POLAR_BIN_DIR) + "/polar")) GTEST_SKIP() << "polar is not built";
  if (!std::filesystem::exists(POLAR_DEFAULT_MODEL)) {
    GTEST_SKIP() << "default model not fetched (scripts/fetch-model): " << POLAR_DEFAULT_MODEL;
  }
  const std::string dir = TempDir("engine_loop");
  const std::string json_path = dir + "/report.json";
  const CliRun run = RunPolar({"bench", "--model", POLAR_DEFAULT_MODEL, "--concurrency", "4", "--requests", "8",
                               "--prompt-tokens", "16", "--prompt-tokens-spread", "0.5", "--output-tokens", "8",
                               "--seed", "7", "--threads", "1", "--json", json_path},
                              dir, std::chrono::seconds(300));
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const nlohmann::json report = nlohmann::json::parse(ReadFile(json_path));
  EXPECT_EQ(report["requests_ok"].get<int64_t>(), 8);
  EXPECT_EQ(report["requests_failed"].get<int64_t>(), 0);
  EXPECT_EQ(report["output_tokens"].get<int64_t>(), 64);
  // Prompt lengths vary with the spread but are a function of the seed.
  const int64_t prompt_tokens = report["prompt_tokens"].get<int64_t>();
  EXPECT_GE(prompt_tokens, 8 * 8);
  EXPECT_LE(prompt_tokens, 8 * 24);
  EXPECT_NE(prompt_tokens, 8 * 16);
  EXPECT_EQ(report["ttft_s"]["count"].get<int64_t>(), 8);
  EXPECT_EQ(report["itl_s"]["count"].get<int64_t>(), 8 * 7);  // one event per token in-process
  EXPECT_LE(report["ttft_s"]["p50"].get<double>(), report["e2e_s"]["p99"].get<double>());
  const CliRun again = RunPolar({"bench", "--model", POLAR_DEFAULT_MODEL, "--concurrency", "2", "--requests", "8",
                                 "--prompt-tokens", "16", "--prompt-tokens-spread", "0.5", "--output-tokens", "8",
                                 "--seed", "7", "--threads", "1", "--json", json_path},
                                dir, std::chrono::seconds(300));
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_EQ(nlohmann::json::parse(ReadFile(json_path))["prompt_tokens"].get<int64_t>(), prompt_tokens);
}

}  // namespace
}  // namespace polar
