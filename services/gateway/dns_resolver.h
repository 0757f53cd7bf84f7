// Resolves a DNS name to every address it has (all A and AAAA records), the
// way the gateway discovers workers behind one name (a Kubernetes headless
// Service has one A record per ready pod).
//
// Uses c-ares (already a dependency of gRPC) rather than getaddrinfo so that
// a specific DNS server can be named (--dns-server: tests run their own
// dnsmasq on loopback; a sidecar resolver in production). With no server
// named it follows the system's configuration (/etc/resolv.conf, and
// /etc/hosts first).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace polar {

// "HOST:PORT" for every address of `host` ("[v6]:PORT" for IPv6), sorted and
// without duplicates. `dns_server`: "" (system resolver) or "IP:PORT" /
// "[IPv6]:PORT". NotFound when the name has no address; Unavailable when no
// answer came within `timeout`.
absl::StatusOr<std::vector<std::string>> ResolveAllAddresses(const std::string& host, const std::string& port,
                                                             const std::string& dns_server, absl::Duration timeout);

}  // namespace polar
