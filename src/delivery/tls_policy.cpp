// The outbound TLS decision table (Postfix TLS_README client levels, RFC 7672
// sections 2.1-2.2).  Pure: no DNS, no sockets, so every row is unit-tested
// in tests/unit/tls_policy_test.cpp.
//
//   level      MX       TLSA                          result
//   none       -        -                             cleartext
//   may        -        -                             opportunistic
//   encrypt    -        -                             encrypt
//   verify     -        -                             verify (host = MX name)
//   dane       bogus    -                             defer "bogus DNSSEC (MX)"
//   dane       insecure (not consulted, 2.2.1)        opportunistic
//   dane       secure   bogus                         defer "bogus DNSSEC (TLSA)"
//   dane       secure   failure / absent              defer "TLSA lookup failed"
//   dane       secure   insecure, nodata, nxdomain    opportunistic
//   dane       secure   secure, some usable           dane with the usable records
//   dane       secure   secure, records, none usable  encrypt (2.2: mandatory TLS)
//   dane-only  as dane, but opportunistic/encrypt become a deferral:
//              "MX not DNSSEC-secure" / "no usable TLSA records"
//
// A TLSA record is usable (RFC 7672 section 3.1.3, RFC 7671 section 5) when
// its usage is DANE-TA(2) or DANE-EE(3), its selector is 0 or 1, its matching
// type is 0, 1 or 2, and its data can match anything: non-empty for an exact
// match, 32 octets for SHA2-256, 64 for SHA2-512.  PKIX-TA(0) and PKIX-EE(1)
// are ignored for SMTP.
#include "delivery/tls_policy.hpp"

namespace mxgate::delivery {
namespace {

bool usable(const dns::TlsaRecord& r) {
  if (r.usage != 2 && r.usage != 3) return false;
  if (r.selector > 1) return false;
  switch (r.matching_type) {
    case 0:
      return !r.data.empty();
    case 1:
      return r.data.size() == 32;
    case 2:
      return r.data.size() == 64;
    default:
      return false;
  }
}

TlsDecision with_mode(TlsRequirement::Mode mode, const std::string& host) {
  TlsDecision d;
  d.requirement.mode = mode;
  d.requirement.host = host;
  return d;
}

TlsDecision deferral(std::string reason, const std::string& host) {
  TlsDecision d;
  d.defer = true;
  d.reason = std::move(reason);
  d.requirement.host = host;
  return d;
}

}  // namespace

std::string_view to_string(TlsLevel level) {
  switch (level) {
    case TlsLevel::none:
      return "none";
    case TlsLevel::may:
      return "may";
    case TlsLevel::encrypt:
      return "encrypt";
    case TlsLevel::dane:
      return "dane";
    case TlsLevel::dane_only:
      return "dane-only";
    case TlsLevel::verify:
      return "verify";
  }
  return "?";
}

bool parse_tls_level(std::string_view text, TlsLevel& level) {
  static constexpr TlsLevel kAll[] = {TlsLevel::none, TlsLevel::may,       TlsLevel::encrypt,
                                      TlsLevel::dane, TlsLevel::dane_only, TlsLevel::verify};
  for (const TlsLevel candidate : kAll) {
    if (to_string(candidate) == text) {
      level = candidate;
      return true;
    }
  }
  return false;
}

TlsDecision decide_tls(TlsLevel level, dns::Security mx_security, const std::string& host,
                       const dns::Answer<dns::TlsaRecord>* tlsa) {
  using Mode = TlsRequirement::Mode;
  switch (level) {
    case TlsLevel::none:
      return with_mode(Mode::cleartext, host);
    case TlsLevel::may:
      return with_mode(Mode::opportunistic, host);
    case TlsLevel::encrypt:
      return with_mode(Mode::encrypt, host);
    case TlsLevel::verify:
      return with_mode(Mode::verify, host);
    case TlsLevel::dane:
    case TlsLevel::dane_only:
      break;
  }
  const bool only = level == TlsLevel::dane_only;

  if (mx_security == dns::Security::bogus) return deferral("bogus DNSSEC (MX)", host);
  if (mx_security == dns::Security::insecure) {
    // RFC 7672 2.2.1: TLSA records only count for hosts from a secure MX RRset.
    if (only) return deferral("MX not DNSSEC-secure", host);
    return with_mode(Mode::opportunistic, host);
  }

  if (tlsa == nullptr) return deferral("TLSA lookup failed", host);
  if (tlsa->security == dns::Security::bogus) return deferral("bogus DNSSEC (TLSA)", host);
  if (tlsa->status == dns::Status::failure) return deferral("TLSA lookup failed", host);
  if (tlsa->security == dns::Security::insecure || tlsa->status != dns::Status::ok || tlsa->records.empty()) {
    if (only) return deferral("no usable TLSA records", host);
    return with_mode(Mode::opportunistic, host);
  }

  TlsDecision d = with_mode(Mode::dane, host);
  for (const auto& record : tlsa->records)
    if (usable(record)) d.requirement.tlsa.push_back(record);
  if (!d.requirement.tlsa.empty()) return d;
  // RFC 7672 2.2: secure TLSA records exist but none is usable: TLS is still
  // mandatory, without authentication.
  if (only) return deferral("no usable TLSA records", host);
  return with_mode(Mode::encrypt, host);
}

}  // namespace mxgate::delivery
