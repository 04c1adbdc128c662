// SPF, RFC 7208: check_host() evaluated natively on mxgate's own resolver
// (src/dns, libunbound), asynchronously on the caller's executor.
//
// What it does
//   check_spf_mail_from() and check_spf_helo() run check_host() (section 4)
//   for the MAIL FROM identity (section 2.4; the null reverse-path is checked
//   as postmaster@HELO) and for the HELO identity (section 2.3).  The
//   evaluation fetches TXT records (section 3.3, 4.4, 4.5: only TXT, the SPF
//   RR type 99 is not consulted), parses the one "v=spf1" record (4.6), walks
//   its mechanisms in order (section 5), follows include and redirect, and
//   expands macros (section 7).  DNS lookups are co_awaited one after another
//   on the Resolver; nothing blocks, nothing is cached between checks, and
//   there is no global mutable state.
//
// Results (section 2.6)
//   none       no usable domain (malformed, single label, address literal,
//              NXDOMAIN) or no "v=spf1" record
//   neutral    the record matched nothing and has no redirect (or "?")
//   pass/fail/softfail   the qualifier of the first matching mechanism
//   temperror  a DNS lookup failed (SERVFAIL, timeout, DNSSEC bogus): the
//              Resolver's Status::failure.  At most one lookup can time out
//              per check, since the first failure ends the evaluation.
//   permerror  syntax error anywhere in a record (the whole record is parsed
//              before any mechanism is evaluated), more than one SPF record,
//              an include whose target has none or errs, a redirect to a
//              domain without a record, or a limit below exceeded.
//   No exception escapes the check functions; an unexpected one (allocation
//   failure) is reported as temperror "internal error".
//
// Limits (SpfLimits, section 4.6.4), each tested at the limit and one past:
//   max_dns_mechanisms  DNS-querying terms (include, a, mx, ptr, exists,
//                       redirect) over the whole evaluation, nested includes
//                       and redirects included; counted as each term is
//                       evaluated, so a redirect ignored because of "all", or
//                       terms after the match, do not count.  Past it:
//                       permerror.
//   max_void_lookups    DNS answers that are NXDOMAIN or NODATA, counted per
//                       query: a, exists, mx's MX query and each MX host's
//                       address query, and the TXT query of include and
//                       redirect targets.  Past it: permerror.  The exp=
//                       lookup never counts.
//   max_mx_names        MX records an mx mechanism may return; more is
//                       permerror (not truncation).
//   Include/redirect nesting is further capped at kMaxSpfRecursion records
//   (only reachable with a raised max_dns_mechanisms) -> permerror.
//
// Choices where RFC 7208 leaves room, written down:
//   * ptr (section 5.5, "SHOULD NOT be used") is parsed and syntax-checked
//     and counts as a DNS-querying term, but never matches: dns::Resolver has
//     no PTR lookup.  Likewise %{p} expands to "unknown" (allowed by 7.3).
//   * a, mx: the Resolver answers A and AAAA together; only addresses of the
//     client's family are compared (5.3, 5.4), and an answer with none of
//     that family counts as a void lookup, as an A (or AAAA) NODATA would.
//     The one difference from two separate queries: if the family we need
//     failed but the other one returned addresses, we see "no addresses of
//     this family" (void) instead of temperror.
//   * exists looks for A records only, also for an IPv6 client (5.7).
//   * mx looks up the addresses of every MX host (at most max_mx_names, in
//     preference order) before comparing, so the void count does not depend
//     on where in the list the match is.  The null MX "." is not looked up.
//   * A target name that is not a valid DNS name after macro expansion
//     (empty label, label over 63 octets) makes its mechanism not match, no
//     query is sent (the RFC leaves it undefined; include/redirect then
//     give permerror like a domain without record).  Expansions longer than
//     253 octets lose labels on the left (7.3).
//   * IPv4-mapped IPv6 clients (::ffff:a.b.c.d) are checked as IPv4 (5).
//   * exp= (6.2) is evaluated only for a fail result of the top-level record
//     (or the record a redirect led to), never for an included one; any
//     problem with it (DNS error, no or several TXT records, bad macro,
//     non-ASCII) means no explanation.
//   * Mechanism and modifier names, "v=spf1", and macro letters are
//     case-insensitive; names are compared without trailing dot.
//   * Names handed to the Resolver carry any byte other than [A-Za-z0-9_-]
//     inside a label as \DDD (RFC 1035 section 5.1), so a local part with
//     odd characters in an exists: query cannot change the name's structure.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dns/resolver.hpp"
#include "util/result.hpp"

namespace mxgate::sender_auth {

enum class SpfResult { none, neutral, pass, fail, softfail, temperror, permerror };  // RFC 7208 section 2.6

// "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"
// (the spelling of RFC 8601 Authentication-Results).
std::string_view to_string(SpfResult result);

struct SpfVerdict {
  SpfResult result = SpfResult::none;
  std::string domain;       // the domain checked (MAIL FROM's domain, or the HELO name)
  std::string mechanism;    // the term that matched, e.g. "ip4:192.0.2.0/24" or "default"
  std::string reason;       // short text for logs / Authentication-Results comments
  std::string explanation;  // fail only: the expanded exp= text, when the record gave one
  // reason and explanation are printable ASCII (other bytes as \xHH), but
  // both can quote the sender and its DNS: quote them where they go.
  unsigned dns_lookups = 0;   // DNS-querying terms evaluated (what max_dns_mechanisms limits)
  unsigned void_lookups = 0;  // NXDOMAIN/NODATA answers counted (what max_void_lookups limits)
};

struct SpfLimits {
  unsigned max_dns_mechanisms = 10;  // include a mx ptr exists redirect, whole evaluation (4.6.4)
  unsigned max_void_lookups = 2;     // NXDOMAIN/NODATA answers, whole evaluation (4.6.4)
  unsigned max_mx_names = 10;        // MX records one mx mechanism may return (4.6.4)
};

// Include/redirect nesting depth cap, independent of SpfLimits.
inline constexpr unsigned kMaxSpfRecursion = 20;

// check_host() for MAIL FROM (sender empty = null sender: postmaster@helo) and, separately, the HELO
// identity. sender is the reverse-path without angle brackets ("<...>" is tolerated).
asio::awaitable<SpfVerdict> check_spf_mail_from(dns::Resolver& resolver, asio::ip::address client,
                                                std::string helo, std::string sender, SpfLimits limits = {});
// none without any lookup when helo is an address literal or not a
// multi-label domain name (section 2.3).
asio::awaitable<SpfVerdict> check_spf_helo(dns::Resolver& resolver, asio::ip::address client,
                                           std::string helo, SpfLimits limits = {});

// ------------------------------------------------------------ check_host()

// The arguments of check_host() (section 4.1) plus what macros need.  The
// two functions above fill it; tests use it to fix the clock and receiver.
struct SpfRequest {
  asio::ip::address client;          // <ip>
  std::string domain;                // <domain>
  std::string sender;                // <sender>, "local@domain" (s, l, o macros)
  std::string helo;                  // h macro (a trailing dot is removed by the callers above)
  std::string receiver = "unknown";  // r macro (exp text only)
  std::int64_t timestamp = 0;        // t macro (exp text only), seconds since the epoch
  SpfLimits limits;
};

asio::awaitable<SpfVerdict> check_host(dns::Resolver& resolver, SpfRequest request);

// ------------------------------------------------------------ records (section 4.5, 4.6, 5, 6)

enum class SpfQualifier { pass, fail, softfail, neutral };  // '+' '-' '~' '?'
enum class SpfMechanismKind { all, include, a, mx, ptr, ip4, ip6, exists };

struct SpfMechanism {
  SpfQualifier qualifier = SpfQualifier::pass;
  SpfMechanismKind kind = SpfMechanismKind::all;
  std::string domain_spec;    // unexpanded; "" for a, mx, ptr without one (= current domain)
  asio::ip::address network;  // ip4, ip6
  unsigned cidr4 = 32;        // a, mx, ip4
  unsigned cidr6 = 128;       // a, mx, ip6
  std::string text;           // the term as written, for verdicts
};

struct SpfRecord {
  std::vector<SpfMechanism> mechanisms;
  std::optional<std::string> redirect;     // domain-spec of redirect=
  std::optional<std::string> explanation;  // domain-spec of exp=
  bool has_all = false;                    // a redirect is then ignored (6.1)
};

// A TXT record is an SPF record when it starts with "v=spf1" (any case)
// followed by a space or its end (4.5).
bool is_spf_record(std::string_view txt);

// The whole record's syntax (4.6.1, 5, 6, 7.1): unknown mechanisms, bad
// qualifiers, CIDR lengths out of range or with leading zeros, IPs that are
// not dotted quads / RFC 4291 text, a domain-spec not ending in a toplabel or
// macro, malformed or misplaced (c r t outside exp text) macros, redirect= or
// exp= twice, characters outside %x21-7E: the error names the term.
// Unknown modifiers are checked for macro syntax and otherwise ignored.
Result<SpfRecord> parse_spf_record(std::string_view txt);

// ------------------------------------------------------------ macros (section 7)

struct SpfMacroContext {
  std::string sender;                // s
  std::string local_part;            // l
  std::string sender_domain;         // o
  std::string domain;                // d
  asio::ip::address client;          // i (dotted quad or 32 dotted nibbles), c, v
  std::string ptr_name = "unknown";  // p (we do not look up PTR)
  std::string helo;                  // h
  std::string receiver = "unknown";  // r
  std::int64_t timestamp = 0;        // t
};

enum class SpfMacroUse {
  domain_spec,  // mechanism and modifier arguments: c, r, t are syntax errors
  explanation,  // exp= TXT text: spaces allowed, c, r, t allowed
};

// Expands a macro-string (or explain-string).  Transformers: *DIGIT (must not
// be 0; more parts than exist means all) and "r", delimiters . - + , / _ =;
// parts are rejoined with "." (7.3).  An upper-case letter URL-escapes its
// value (RFC 3986 unreserved kept).  Errors: a '%' not followed by { % _ -,
// an unknown letter, "%{d0}", an unterminated macro, a byte outside the
// allowed range.
Result<std::string> expand_spf_macros(std::string_view text, const SpfMacroContext& context, SpfMacroUse use);

// expand_spf_macros() for a target name: one trailing dot removed, then
// labels cut from the left while it is longer than 253 octets (7.3).
Result<std::string> expand_spf_domain_spec(std::string_view domain_spec, const SpfMacroContext& context);

}  // namespace mxgate::sender_auth
