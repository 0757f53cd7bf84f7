// Child processes for the gateway integration tests: a polar-worker or
// polar-gateway started from its real binary, whose stdout we read line by
// line (both print one "... listening grpc=HOST:PORT metrics=HOST:PORT" line
// once they serve), which we can signal (SIGTERM to drain, SIGKILL to crash)
// and which is always reaped. Shared by gateway_test.cc and
// gateway_acceptance_test.cc so both drive the services the same way.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace polar::testing {

// A child process whose stdout we read line by line.
class ChildProcess {
 public:
  ~ChildProcess() { Stop(); }

  bool Start(const std::vector<std::string>& argv) {
    int fds[2];
    if (pipe(fds) != 0) return false;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(fds[1]);
    out_fd_ = fds[0];
    return pid_ > 0;
  }

  // The first stdout line starting with `prefix`, or "" after `timeout`.
  std::string WaitForLine(const std::string& prefix, std::chrono::seconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      size_t newline;
      while ((newline = buffer_.find('\n')) != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        if (line.rfind(prefix, 0) == 0) return line;
      }
      pollfd pfd{out_fd_, POLLIN, 0};
      if (poll(&pfd, 1, 200) <= 0) continue;
      char chunk[4096];
      ssize_t n = read(out_fd_, chunk, sizeof(chunk));
      if (n <= 0) return "";  // exited
      buffer_.append(chunk, n);
    }
    return "";
  }

  // Sends `signal` and waits up to `timeout` for the exit. Returns the exit
  // code, -1 if a signal ended it, -2 if it outlived `timeout` (then it is
  // SIGKILLed and reaped).
  int SignalAndWait(int signal, std::chrono::seconds timeout) {
    if (pid_ <= 0) return -2;
    kill(pid_, signal);
    const auto end = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (std::chrono::steady_clock::now() < end) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        CloseOutput();
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    CloseOutput();
    return -2;
  }

  // SIGTERM, then SIGKILL if it has not exited after 10 s.
  void Stop() {
    if (pid_ > 0) SignalAndWait(SIGTERM, std::chrono::seconds(10));
    CloseOutput();
  }

  pid_t pid() const { return pid_; }

 private:
  void CloseOutput() {
    if (out_fd_ >= 0) close(out_fd_);
    out_fd_ = -1;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffer_;
};

// "... grpc=HOST:PORT metrics=HOST:PORT" -> the value after `key=`.
inline std::string Field(const std::string& line, const std::string& key) {
  size_t begin = line.find(key + "=");
  if (begin == std::string::npos) return "";
  begin += key.size() + 1;
  size_t end = line.find(' ', begin);
  return line.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

// The sum of every sample of metric `name` (any labels) in a /metrics
// scrape of `address` (HOST:PORT); -1 if the scrape failed.
inline double MetricValue(const std::string& address, const std::string& name) {
  httplib::Client client(address.substr(0, address.rfind(':')), std::stoi(address.substr(address.rfind(':') + 1)));
  client.set_connection_timeout(2);
  auto result = client.Get("/metrics");
  if (!result || result->status != 200) return -1;
  double sum = 0;
  size_t at = 0;
  const std::string& body = result->body;
  while ((at = body.find(name, at)) != std::string::npos) {
    const bool line_start = at == 0 || body[at - 1] == '\n';
    const size_t after = at + name.size();
    at = after;
    if (!line_start || after >= body.size() || (body[after] != ' ' && body[after] != '{')) continue;
    const size_t value = body.find(' ', body[after] == '{' ? body.find('}', after) : after);
    sum += std::stod(body.substr(value + 1, body.find('\n', value) - value - 1));
  }
  return sum;
}

// A TCP port nobody listens on right now (bound to port 0, then released).
inline int UnusedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

}  // namespace polar::testing
