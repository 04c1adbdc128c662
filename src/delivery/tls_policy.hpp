// Outbound TLS security levels as Postfix defines them (TLS_README, "Client
// TLS security levels") and the DANE rules of RFC 7672 sections 2.1-2.2:
// from a configured level and what DNS said, decide what TLS a connection to
// one MX host requires, or that the attempt must be deferred.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "dns/resolver.hpp"

namespace mxgate::delivery {

enum class TlsLevel { none, may, encrypt, dane, dane_only, verify };

std::string_view to_string(TlsLevel level);
// "none" | "may" | "encrypt" | "dane" | "dane-only" | "verify"
bool parse_tls_level(std::string_view text, TlsLevel& level);

// What one connection must achieve.
struct TlsRequirement {
  enum class Mode {
    cleartext,      // do not use TLS
    opportunistic,  // TLS if offered, unauthenticated; on handshake failure retry in cleartext
    encrypt,        // TLS required, unauthenticated
    verify,         // TLS required, certificate valid under the system trust store for host
    dane,           // TLS required, authenticated by tlsa (usages 2 and 3 only)
  };
  Mode mode = Mode::opportunistic;
  std::vector<dns::TlsaRecord> tlsa;  // usable records only, for Mode::dane
  std::string host;                   // the MX host name: SNI and name checks
};

struct TlsDecision {
  bool defer = false;   // true: do not connect; reason says why (e.g. "bogus DNSSEC")
  std::string reason;
  TlsRequirement requirement;
};

// mx_security: how the MX RRset (or, for a relay, nothing: pass insecure)
// was obtained; tlsa: the TLSA answer for this host (ignored below dane).
TlsDecision decide_tls(TlsLevel level, dns::Security mx_security, const std::string& host,
                       const dns::Answer<dns::TlsaRecord>* tlsa);

}  // namespace mxgate::delivery
