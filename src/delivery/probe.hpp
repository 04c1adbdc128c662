// mxgate probe DOMAIN: what delivery to DOMAIN would find, like Postfix's
// posttls-finger: the MX RRset and its DNSSEC status (RFC 4035, RFC 7505
// null MX, RFC 5321 5.1 implicit MX), each MX host's addresses, its TLSA
// RRset (RFC 7672) when the MX and address answers are secure, the TLS
// requirement decide_tls() gives, and one SMTP connection per MX host
// (greeting, EHLO, STARTTLS, handshake, EHLO, QUIT; never MAIL).
#pragma once

#include <asio/awaitable.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "delivery/smtp_client.hpp"
#include "dns/resolver.hpp"
#include "util/result.hpp"

namespace mxgate::delivery {

struct ProbeHost {
  std::string host;
  std::uint16_t port = 25;
  std::string security;                // weaker of MX RRset and address records
  std::vector<std::string> addresses;
  std::string error;                   // why it has no addresses
  bool tlsa_looked_up = false;         // only when security is secure
  std::string tlsa_status;             // ok | nxdomain | nodata | failure
  std::string tlsa_security;
  std::string tlsa_reason;
  std::vector<std::string> tlsa;       // "3 1 1 <hex>"
  std::string tls_requirement;         // cleartext | opportunistic | encrypt | verify | dane | defer
  std::string tls_defer_reason;        // for defer
  std::string probed_address;          // the first address, probed
  std::string probed_with;             // the requirement the connection used
  std::optional<ProbeResult> connection;
};

struct ProbeReport {
  std::string domain;
  std::string next_hop = "mx";  // or the matching route's next_hop
  std::string tls_level;        // the level decide_tls was given
  bool mx_looked_up = false;    // false for smtp:[host]:port
  std::string mx_name;          // the name whose MX was looked up
  std::string mx_status;        // ok | nxdomain | nodata | failure
  std::string mx_security;      // secure | insecure | bogus
  std::string mx_reason;
  std::vector<std::string> mx;  // "10 mx.example.org"
  bool null_mx = false;
  bool implicit_mx = false;
  std::string outcome;          // empty, or why there is nothing to connect to
  std::vector<ProbeHost> hosts;
};

asio::awaitable<ProbeReport> probe_domain(dns::Resolver& resolver, const config::Config& config,
                                          std::string domain);

// One block per MX host, readable.
std::string probe_text(const ProbeReport& report);
// One JSON object and a newline.
std::string probe_json(const ProbeReport& report);

// Runs probe_domain on its own io_context with a Resolver made from the
// config's [dns]; an error only when the resolver cannot be set up.
Result<ProbeReport> run_probe(const config::Config& config, std::string domain);

}  // namespace mxgate::delivery
