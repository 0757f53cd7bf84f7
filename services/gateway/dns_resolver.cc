// See dns_resolver.h.
#include "services/gateway/dns_resolver.h"

#include <arpa/inet.h>
#include <ares.h>
#include <netinet/in.h>
#include <poll.h>

#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"

namespace polar {
namespace {

// What the c-ares callback hands back.
struct Lookup {
  bool done = false;
  int status = ARES_SUCCESS;
  std::set<std::string> addresses;
  std::string port;
};

void OnAddresses(void* arg, int status, int /*timeouts*/, ares_addrinfo* result) {
  auto* lookup = static_cast<Lookup*>(arg);
  lookup->done = true;
  lookup->status = status;
  if (result == nullptr) return;
  for (ares_addrinfo_node* node = result->nodes; node != nullptr; node = node->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    if (node->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(node->ai_addr)->sin_addr, text, sizeof(text));
      lookup->addresses.insert(absl::StrCat(text, ":", lookup->port));
    } else if (node->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(node->ai_addr)->sin6_addr, text, sizeof(text));
      lookup->addresses.insert(absl::StrCat("[", text, "]:", lookup->port));
    }
  }
  ares_freeaddrinfo(result);
}

// Owns a c-ares channel.
class AresChannel {
 public:
  ~AresChannel() {
    if (initialized_) ares_destroy(channel_);
  }
  absl::Status Init(const std::string& dns_server, absl::Duration timeout) {
    static std::once_flag library_once;
    std::call_once(library_once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
    ares_options options{};
    options.timeout = static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(timeout) / 2));
    options.tries = 2;
    if (int rc = ares_init_options(&channel_, &options, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES); rc != ARES_SUCCESS) {
      return absl::InternalError(absl::StrCat("c-ares init: ", ares_strerror(rc)));
    }
    initialized_ = true;
    if (!dns_server.empty()) {
      if (int rc = ares_set_servers_ports_csv(channel_, dns_server.c_str()); rc != ARES_SUCCESS) {
        return absl::InvalidArgumentError(
            absl::StrCat("DNS server \"", dns_server, "\" is not IP:PORT (", ares_strerror(rc), ")"));
      }
    }
    return absl::OkStatus();
  }
  ares_channel get() { return channel_; }

 private:
  ares_channel channel_ = nullptr;
  bool initialized_ = false;
};

}  // namespace

absl::StatusOr<std::vector<std::string>> ResolveAllAddresses(const std::string& host, const std::string& port,
                                                             const std::string& dns_server, absl::Duration timeout) {
  AresChannel channel;
  if (absl::Status status = channel.Init(dns_server, timeout); !status.ok()) return status;
  Lookup lookup;
  lookup.port = port;
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  ares_getaddrinfo(channel.get(), host.c_str(), port.c_str(), &hints, &OnAddresses, &lookup);

  // Drive the channel until the callback ran (c-ares enforces its own
  // per-try timeouts; `timeout` bounds the whole lookup).
  const absl::Time give_up = absl::Now() + timeout;
  while (!lookup.done && absl::Now() < give_up) {
    ares_socket_t sockets[ARES_GETSOCK_MAXNUM];
    const int mask = ares_getsock(channel.get(), sockets, ARES_GETSOCK_MAXNUM);
    pollfd fds[ARES_GETSOCK_MAXNUM];
    int count = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      short events = 0;
      if (ARES_GETSOCK_READABLE(mask, i)) events |= POLLIN;
      if (ARES_GETSOCK_WRITABLE(mask, i)) events |= POLLOUT;
      if (events == 0) continue;
      fds[count++] = pollfd{sockets[i], events, 0};
    }
    timeval max_wait{0, 100 * 1000};
    timeval wait{};
    ares_timeout(channel.get(), &max_wait, &wait);
    const int wait_ms = static_cast<int>(wait.tv_sec * 1000 + wait.tv_usec / 1000);
    if (poll(fds, count, std::max(wait_ms, 1)) <= 0) {
      ares_process_fd(channel.get(), ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts
      continue;
    }
    for (int i = 0; i < count; ++i) {
      ares_process_fd(channel.get(), (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) ? fds[i].fd : ARES_SOCKET_BAD,
                      (fds[i].revents & POLLOUT) ? fds[i].fd : ARES_SOCKET_BAD);
    }
  }
  if (!lookup.done) {
    ares_cancel(channel.get());  // runs the callback with ARES_ECANCELLED
    return absl::UnavailableError(absl::StrCat("no DNS answer for \"", host, "\" within ", absl::FormatDuration(timeout)));
  }
  if (lookup.status == ARES_ENOTFOUND || lookup.status == ARES_ENODATA ||
      (lookup.status == ARES_SUCCESS && lookup.addresses.empty())) {
    return absl::NotFoundError(absl::StrCat("\"", host, "\" has no address"));
  }
  if (lookup.status != ARES_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("resolving \"", host, "\": ", ares_strerror(lookup.status)));
  }
  return std::vector<std::string>(lookup.addresses.begin(), lookup.addresses.end());
}

}  // namespace polar
