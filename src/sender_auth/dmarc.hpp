// DMARC (RFC 7489): is the RFC 5322 From domain authenticated by an aligned
// SPF or DKIM pass, and what does its owner ask for when it is not?
//
// Policy discovery (section 6.6.3): TXT at _dmarc.<From domain>, else at
// _dmarc.<organizational domain>; records not starting with "v=DMARC1" are
// ignored and more than one valid record means no policy.  The
// organizational domain (section 3.2) comes from the Public Suffix List via
// libpsl, reading Debian's `publicsuffix` package (its file is updated with
// the package, not by us).
//
// pct (section 6.6.4) below 100 asks that only that share of failing mail
// get the policy; mxgate is deterministic instead: the policy is applied one
// step milder (reject -> quarantine -> none) whenever pct < 100.
#pragma once

#include <asio/awaitable.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dns/resolver.hpp"
#include "sender_auth/dkim.hpp"
#include "sender_auth/spf.hpp"
#include "util/result.hpp"

struct psl_ctx_st;

namespace mxgate::sender_auth {

// RAII over libpsl's context; immutable once loaded, shared by every check.
class PublicSuffixList {
 public:
  // Debian's list (/usr/share/publicsuffix), else libpsl's built-in copy.
  static Result<PublicSuffixList> load();
  // "mail.example.co.uk" -> "example.co.uk"; a public suffix itself, or a
  // name the list cannot place, is its own organizational domain.
  std::string organizational_domain(std::string_view domain) const;
  std::string source() const { return source_; }

 private:
  struct Free {
    void operator()(psl_ctx_st* ctx) const;
  };
  std::unique_ptr<psl_ctx_st, Free> ctx_;
  std::string source_;
};

enum class DmarcResult { none, pass, fail, temperror, permerror };
enum class DmarcPolicy { none, quarantine, reject };
std::string_view to_string(DmarcResult result);
std::string_view to_string(DmarcPolicy policy);

struct DmarcRecord {
  DmarcPolicy policy = DmarcPolicy::none;            // p=
  std::optional<DmarcPolicy> subdomain_policy;       // sp=
  bool strict_dkim = false;                          // adkim=s
  bool strict_spf = false;                           // aspf=s
  unsigned percent = 100;                            // pct=
};

// Section 6.3; an error for anything that is not a DMARC1 record with a valid p=.
Result<DmarcRecord> parse_dmarc_record(std::string_view text);

// Section 3.1: strict is equality; relaxed is the same organizational domain.
bool aligned(std::string_view a, std::string_view b, bool strict, const PublicSuffixList& psl);

struct DmarcVerdict {
  DmarcResult result = DmarcResult::none;
  DmarcPolicy policy = DmarcPolicy::none;  // what the owner asks for this message (after sp= and pct=)
  std::string from_domain;
  std::string reason;
};

// spf is the MAIL FROM check of spf_domain (the envelope sender's domain,
// or the HELO name for the null sender); dkim every signature's verdict.
asio::awaitable<DmarcVerdict> check_dmarc(dns::Resolver& resolver, const PublicSuffixList& psl,
                                          std::string from_domain, SpfResult spf, std::string spf_domain,
                                          std::vector<DkimVerdict> dkim);

}  // namespace mxgate::sender_auth
