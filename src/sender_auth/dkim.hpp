// DKIM signature verification (RFC 6376), with the algorithm updates of RFC
// 8301 (rsa-sha1 refused, RSA keys below 1024 bits refused) and RFC 8463
// (ed25519-sha256), on OpenSSL 3 EVP.  Results are named as RFC 8601 section
// 2.7.1 names them, for the Authentication-Results header and for DMARC.
//
// Two layers:
//   - pure functions (no I/O, no clock, no global state): tag-list parsing
//     (RFC 6376 section 3.2), the DKIM-Signature (3.5) and key record (3.6.1)
//     parsers, splitting a message into header fields and body, header
//     selection (5.4.2), canonicalization (3.4), and verify_with_key(), which
//     checks one signature of a message against a key record's text;
//   - verify_dkim(), a coroutine that finds every DKIM-Signature field, looks
//     up each key at <s>._domainkey.<d> (TXT) and calls the pure layer.
//
// How outcomes map to results (RFC 6376 section 6.1 and RFC 8601 2.7.1):
//   pass       the body hash and the signature both verify;
//   fail       the body hash (bh=) or the signature (b=) does not verify:
//              the message was changed, or was never signed with this key;
//   permerror  everything else RFC 6376 calls PERMFAIL: a malformed or
//              incomplete signature (syntax, duplicate or missing required
//              tags, v= not 1, h= without From, i= outside d=, x= not after
//              t=), an unsupported or refused algorithm (rsa-sha1), an
//              expired signature (x= before the injected clock, 6.1.1), no
//              key (NXDOMAIN, no TXT record; 6.1.2), several TXT records at
//              the key name (3.6.2.2 leaves that undefined), a malformed,
//              revoked (empty p=) or unsuitable key (k= not matching a=, h=
//              without sha256, s= without email, t=s with an i= subdomain),
//              an RSA key below 1024 bits, and l= larger than the body;
//   temperror  the key lookup failed (SERVFAIL, timeout, DNSSEC bogus);
//   policy     signatures this verifier declined to check: those after the
//              first DkimLimits::max_signatures, and every signature of a
//              message with more than kMaxHeaderFields header fields.
// neutral and none are never produced: an unsigned message yields no verdict
// at all (an empty vector means dkim=none).  A key with t=y (testing) does
// not change the result; the verdict says so in `testing` and `reason`.
//
// Line ends: the message is expected with CRLF line ends; a bare LF is read
// as a line end too (the network normal form of RFC 6376 section 5.3), and a
// bare CR is ordinary data.
//
// Limits (all checked; exceeding one gives the result named):
//   kMaxHeaderFields   header fields read from a message (policy beyond);
//   kMaxTags           tags in one tag-list (permerror beyond);
//   kMaxSignedHeaders  names in one h= list (permerror beyond);
//   kMaxRsaKeyBits     RSA modulus size accepted (permerror beyond);
//   DkimLimits::max_signatures  signatures verified per message, in order
//                      from the top (policy beyond; no DNS query for them).
// Every loop runs over the message, a tag-list or a bounded list.
#pragma once

#include <asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dns/resolver.hpp"
#include "util/result.hpp"

namespace mxgate::sender_auth {

// Header fields a message may have before its signatures are not checked
// (policy).  Real messages have a few dozen; a hop count limit of 100
// Received fields (Postfix's default) fits many times over.
inline constexpr std::size_t kMaxHeaderFields = 1000;
// Tags in one tag-list.  RFC 6376 defines 14 signature and 7 key tags;
// unknown tags are ignored (3.2) but still counted.
inline constexpr std::size_t kMaxTags = 64;
// Names in one h= list; oversigning signers list a few dozen at most.
inline constexpr std::size_t kMaxSignedHeaders = 256;
// RSA keys above this size are refused (permerror) to bound the cost of one
// verification; RFC 8301 section 3.2 requires 1024..4096 to be accepted.
inline constexpr int kMaxRsaKeyBits = 8192;
// RFC 8301 section 3.2: smaller RSA keys are not valid.
inline constexpr int kMinRsaKeyBits = 1024;

enum class DkimResult { none, pass, fail, neutral, policy, temperror, permerror };  // RFC 8601 2.7.1 names

std::string_view to_string(DkimResult result);

struct DkimVerdict {
  DkimResult result = DkimResult::none;
  std::string domain;     // d=, lower case
  std::string selector;   // s=
  std::string algorithm;  // "rsa-sha256" / "ed25519-sha256" (a=, lower case; also when refused)
  std::string identity;   // i= (or "@" + d when absent)
  std::string b_prefix;   // first 8 characters of b= (RFC 6008 header.b)
  std::string reason;     // short, for the log and Authentication-Results comment
  bool testing = false;   // the key record has t=y (RFC 6376 3.6.1)
};

struct DkimLimits {
  std::size_t max_signatures = 5;
  std::chrono::system_clock::time_point now = std::chrono::system_clock::now();
};

// Verifies every DKIM-Signature field of `message` (the whole message with
// CRLF line ends, our own Received field may be first), one verdict per
// field in order from the top.  The first limits.max_signatures are checked,
// each key looked up once as TXT at "<s>._domainkey.<d>" (sequentially; each
// lookup is bounded by the resolver's query timeout); later ones get policy
// "not checked" without a lookup.  DNS answers map as: failure ->
// temperror; nxdomain, nodata, no record -> permerror "no key"; several
// records -> permerror.  `message` must outlive the coroutine.
asio::awaitable<std::vector<DkimVerdict>> verify_dkim(std::string_view message, dns::Resolver& resolver,
                                                      DkimLimits limits);

// Pure: verifies the DKIM-Signature field of `message` whose value (the text
// after "DKIM-Signature:", folding included; surrounding white space is not
// compared) is `dkim_signature_header_value`, against the key record text
// `key_record` (one TXT record, its strings joined), at time `now`.  The
// topmost matching field is used; a value not found in the message gives
// permerror.
DkimVerdict verify_with_key(std::string_view message, std::string_view dkim_signature_header_value,
                            std::string_view key_record, std::chrono::system_clock::time_point now);

// ---- The pure parts, exposed for tests and for the DMARC and ARC code. ----

// One tag=value of a tag-list (RFC 6376 section 3.2).  name and value are
// views into the parsed text; value has its surrounding FWS removed but may
// hold FWS inside (b=, h=, p= do).  region_begin/region_end are offsets into
// the text of everything between '=' and the next ';' (or the end): what
// "the value of b= including all surrounding whitespace" means in 3.7.
struct Tag {
  std::string_view name;
  std::string_view value;
  std::size_t region_begin = 0;
  std::size_t region_end = 0;
};

// Parses a tag-list: tag-spec *(";" tag-spec) [";"], white space (SP, HTAB,
// CR, LF) allowed around names, '=' and values.  Errors: a tag-spec without
// '=', a name not ALPHA *(ALPHA / DIGIT / "_"), a value with a control
// character or an empty tag-spec (";;"), a duplicate name (names are case
// sensitive), more than kMaxTags tags.  Bytes 0x80..0xFF are accepted in
// values (RFC 8616 UTF-8).  An empty text is an empty list.
Result<std::vector<Tag>> parse_tag_list(std::string_view text);

enum class Canonicalization { simple, relaxed };
enum class KeyType { rsa, ed25519 };

// A DKIM-Signature field value, checked as RFC 6376 sections 3.5 and 6.1.1
// require (the clock is not consulted here: see verify_with_key).
struct DkimSignature {
  std::string algorithm;  // "rsa-sha256" or "ed25519-sha256"
  KeyType key_type = KeyType::rsa;
  Canonicalization header_canonicalization = Canonicalization::simple;
  Canonicalization body_canonicalization = Canonicalization::simple;
  std::string domain;                        // d=, lower case
  std::string selector;                      // s=, as given
  std::string identity;                      // i=, or "@" + domain
  std::vector<std::string> signed_headers;   // h=, lower case, in order, repeats kept
  std::vector<std::uint8_t> body_hash;       // bh=, 32 bytes
  std::vector<std::uint8_t> signature;       // b=, decoded
  std::string b_text;                        // b= with FWS removed (for header.b)
  std::optional<std::uint64_t> body_length;  // l=; saturates at UINT64_MAX
  std::optional<std::uint64_t> timestamp;    // t=, seconds since the epoch
  std::optional<std::uint64_t> expiration;   // x=
  std::size_t b_region_begin = 0;            // offsets into the value: b='s region (Tag)
  std::size_t b_region_end = 0;
};

// Errors (all PERMFAIL): missing v/a/b/bh/d/h/s; v not "1"; a= unknown or
// rsa-sha1 (RFC 8301); c= unknown; q= without "dns/txt"; d= or s= not a
// sequence of DNS labels (LDH and '_', ASCII only); h= without "from" or
// with an empty name or more than kMaxSignedHeaders names; i= whose domain
// is neither d= nor a subdomain of it; bh= or b= not base64 (bh= not 32
// bytes); l=, t=, x= not decimal; x= not after t=.
Result<DkimSignature> parse_signature(std::string_view header_value);

// A key record (RFC 6376 section 3.6.1).
struct DkimKey {
  KeyType key_type = KeyType::rsa;       // k=, default rsa
  std::vector<std::uint8_t> public_key;  // p= decoded; empty = revoked
  bool testing = false;                  // t= has "y"
  bool strict = false;                   // t= has "s": i= must be in d= itself
};

// Errors: a tag-list error; v= present but not "DKIM1" or not the first tag;
// k= unknown; h= present without "sha256"; s= present without "email" or
// "*"; p= missing or not base64.  A revoked key (empty p=) is not an error
// here: public_key is empty.
Result<DkimKey> parse_key_record(std::string_view record);

// A header field of a message: its name (white space before the colon
// removed) and its whole text from the name to the end of its last line,
// continuation lines included, the final line end excluded.  A line that
// does not continue a field and has no colon, or whose text before the first
// colon is not a field name (RFC 5322 section 2.2: printable US-ASCII; an
// mbox "From " line), becomes a field with an empty name, which no h= name
// selects.  A line starting with white space before any field is such a
// field too.
struct HeaderField {
  std::string_view name;
  std::string_view raw;
};

struct MessageParts {
  std::vector<HeaderField> fields;  // top to bottom, at most kMaxHeaderFields
  std::string_view body;            // after the empty line; empty when there is none
  bool too_many_fields = false;     // the header had more fields: fields is incomplete
};

MessageParts split_message(std::string_view message);

// RFC 6376 section 5.4.2: for each name of `names` (lower case), the lowest
// field of that name not yet selected, skipping the field at `exclude` (the
// signature being verified); a name with no field left selects nothing.
// Returns indexes into parts.fields, in h= order.
std::vector<std::size_t> select_headers(const MessageParts& parts, const std::vector<std::string>& names,
                                        std::size_t exclude);

// RFC 6376 section 3.4.1/3.4.2: one header field, CRLF terminated.
std::string canonicalize_header(std::string_view raw_field, Canonicalization canonicalization);
// RFC 6376 section 3.4.3/3.4.4 (with erratum 3133: a body not ending in a
// line end gets one): the whole canonicalized body.
std::string canonicalize_body(std::string_view body, Canonicalization canonicalization);

// Strict base64 (RFC 4648 section 4) after removing SP, HTAB, CR and LF;
// nullopt on any other character, a bad length or misplaced padding.
std::optional<std::vector<std::uint8_t>> decode_base64(std::string_view text);

}  // namespace mxgate::sender_auth
