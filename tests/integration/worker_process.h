// A polar-worker child process for integration tests: starts the real binary
// on loopback with port 0, reads the ports it printed, offers a channel and a
// health check, and reaps it (SIGKILL if still alive) when destroyed.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace polar::testing {

class WorkerProcess {
 public:
  // Starts POLAR_BIN_DIR/polar-worker with `extra` flags; false (with
  // `error`) if it did not print its listening line.
  bool Start(const std::vector<std::string>& extra, std::string* error) {
    int out[2];
    if (pipe(out) != 0) return Fail("pipe", error);
    std::vector<std::string> argv = {std::string(POLAR_BIN_DIR) + "/polar-worker", "--listen", "127.0.0.1:0",
                                     "--metrics-listen", "127.0.0.1:0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ < 0) return Fail("fork", error);
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      std::vector<char*> args;
      for (std::string& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(out[1]);
    stdout_ = fdopen(out[0], "r");
    char line[512];
    if (fgets(line, sizeof(line), stdout_) == nullptr) return Fail("worker exited before listening", error);
    // "polar-worker listening grpc=127.0.0.1:P metrics=127.0.0.1:Q"
    const std::string text(line);
    grpc_port_ = PortAfter(text, "grpc=");
    metrics_port_ = PortAfter(text, "metrics=");
    if (grpc_port_ <= 0 || metrics_port_ <= 0) return Fail("unexpected line: " + text, error);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_), grpc::InsecureChannelCredentials());
    return true;
  }

  ~WorkerProcess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_ != nullptr) fclose(stdout_);
  }

  // The grpc.health.v1 status of the empty service name: "SERVING",
  // "NOT_SERVING" or an error, through a generic call (Debian ships no
  // generated health stubs): the request is empty, a SERVING response is
  // field 1 = 1 (bytes 08 01).
  std::string HealthStatus() {
    grpc::GenericStub stub(channel_);
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::Slice empty("");
    grpc::ByteBuffer request(&empty, 1);
    std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
        stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
    call->StartCall();
    grpc::ByteBuffer response;
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag;
    bool ok;
    cq.Next(&tag, &ok);
    if (!status.ok()) return absl::StrCat("error ", status.error_code());
    std::vector<grpc::Slice> slices;
    (void)response.Dump(&slices);
    std::string bytes;
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    if (bytes == std::string("\x08\x01", 2)) return "SERVING";
    if (bytes == std::string("\x08\x02", 2)) return "NOT_SERVING";
    return "UNKNOWN";
  }

  // Polls health until SERVING or the process dies / ~120 s pass.
  bool WaitServing() {
    for (int i = 0; i < 1200; ++i) {
      if (HealthStatus() == "SERVING") return true;
      if (waitpid(pid_, &exit_status_, WNOHANG) == pid_) {
        reaped_ = true;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  // Sends `signal` and waits for the exit; the exit code, or -1 if killed by a signal.
  int SignalAndWait(int signal) {
    kill(pid_, signal);
    waitpid(pid_, &exit_status_, 0);
    reaped_ = true;
    return WIFEXITED(exit_status_) ? WEXITSTATUS(exit_status_) : -1;
  }

  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  int metrics_port() const { return metrics_port_; }

 private:
  static int PortAfter(const std::string& text, const std::string& key) {
    const size_t at = text.find(key);
    if (at == std::string::npos) return -1;
    const size_t colon = text.find(':', at);
    const size_t end = text.find_first_of(" \n", colon);
    int port = -1;
    if (!absl::SimpleAtoi(text.substr(colon + 1, end - colon - 1), &port)) return -1;
    return port;
  }
  static bool Fail(const std::string& what, std::string* error) {
    *error = what;
    return false;
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_status_ = 0;
  FILE* stdout_ = nullptr;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace polar::testing
