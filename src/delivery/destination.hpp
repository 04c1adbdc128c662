// Where to connect for one recipient domain: RFC 5321 section 5.1 (MX in
// preference order, equal preferences shuffled, the domain itself when it
// has no MX), RFC 7505 (null MX), and the DNSSEC status RFC 7672 section 2.2
// bases DANE on (the MX RRset and the host's address records both secure).
#pragma once

#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "dns/resolver.hpp"

namespace mxgate::delivery {

struct Candidate {
  std::string host;  // MX host name, or the relay host / IP literal
  std::vector<asio::ip::address> addresses;
  dns::Security security = dns::Security::insecure;  // weaker of MX RRset and address records
  std::uint16_t port = 25;
  std::string error;  // why it has no addresses ("address lookup failed: ...")
};

struct Destination {
  enum class Outcome { ok, defer, bounce } outcome = Outcome::ok;
  std::string reason;  // "4.4.3 ..." for defer, "5.1.10 ..." for bounce
  std::vector<Candidate> candidates;
};

// route: the matching [[route]] (kind mx or smtp), or null for MX delivery
// of domain on mx_port.
asio::awaitable<Destination> resolve_destination(dns::Resolver& resolver, const config::Route* route,
                                                 std::string domain, std::uint16_t mx_port, std::mt19937& rng);

}  // namespace mxgate::delivery
