// URLs as the phishing checks need them: where they are in plain text, which
// host a browser would connect to, and whether two hosts belong to the same
// registrable domain.
//
// A phishing link is judged by the host the victim's browser would contact,
// not by what the URL appears to say, so parse_url() follows browsers
// (WHATWG URL Standard, "host parsing") wherever they are more lenient than
// RFC 3986: userinfo is dropped ("http://paypal.com@evil.test/" goes to
// evil.test), backslashes end the authority like slashes, the host is
// percent-decoded, the IDNA full stops U+3002, U+FF0E and U+FF61 separate
// labels (UTS #46), and IPv4 hosts may be written as one to four decimal,
// octal ("0177") or hex ("0x7f") numbers ("http://3232235777/",
// "http://0x7f.1/").  Hosts are returned in lower case (ASCII only; U-labels
// are left as UTF-8, see lookalike.hpp for IDNA, RFC 5891).
//
// Registrable domains are approximated without the Public Suffix List (libpsl
// will replace public_suffix() later): the public suffix is the last label,
// or the last two labels when the top-level label is a two-letter country code
// and the second-level label is one of the generic ones registries sell under
// (kSecondLevelLabels in url.cpp: co, com, net, org, ac, gov, ...), so
// "shop.example.co.uk" belongs to "example.co.uk" while "bit.ly" and "t.co"
// stay registrable domains of their own.  Private suffixes (github.io,
// blogspot.com) are not known: two tenants of one of those compare as the
// same registrable domain.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::filter {

// find_urls() stops after this many URLs and reports truncation; a text with
// more is not scanned completely (the caller treats that as a check failure).
inline constexpr std::size_t kMaxTextUrls = 1000;
// A URL longer than this is cut at this length by find_urls(); the host is
// always within the first few hundred bytes of any URL a browser accepts.
inline constexpr std::size_t kMaxUrlLength = 8192;
// Hosts longer than a DNS name (RFC 1035 section 2.3.4: 255 octets) cannot
// be resolved; parse_url() rejects them.
inline constexpr std::size_t kMaxHostLength = 255;

struct FoundUrls {
  std::vector<std::string> urls;  // in text order, trailing punctuation removed
  bool truncated = false;         // more than kMaxTextUrls were present
};

// URLs in plain text: "http://" and "https://" (any case) wherever they
// occur, and "www." at the start of a word.  Bare host names ("example.test")
// are not searched for.  A URL ends at ASCII white space, a control
// character, '<', '>', '"', '`' or U+00A0; trailing ".,;:!?'*" and unbalanced
// ')' ']' are dropped, as mail clients do when they linkify text.
FoundUrls find_urls(std::string_view text, std::size_t max_urls = kMaxTextUrls);

struct ParsedUrl {
  std::string scheme;       // lower case: "http", "https", "ftp", ...; "" for "www." and "//" forms
  std::string host;         // lower case, no trailing dot; IPv4 as dotted decimal; IPv6 without brackets
  bool ip_literal = false;  // IPv4 in any notation, or "[...]"
};

// The host a browser would contact for url (absolute "scheme://", a
// scheme-relative "//host", or a "www." text URL).  nullopt when there is
// none: relative references ("/login", "#top"), "mailto:", "tel:",
// "javascript:", "data:", an empty or over-long host.
std::optional<ParsedUrl> parse_url(std::string_view url);

// An IPv4 host in the notations browsers accept (WHATWG "IPv4 parser"):
// one to four parts separated by '.', each decimal, octal (leading 0) or hex
// (0x), the last part filling the remaining bytes.  Returns dotted decimal,
// or nullopt when host is not such a number (or out of range).
std::optional<std::string> parse_ipv4(std::string_view host);

// True when host is domain or a subdomain of it (both lower case).
bool is_same_or_subdomain(std::string_view host, std::string_view domain);

// The approximate public suffix of host (see the header comment); the whole
// host when it is a single label.
std::string_view public_suffix(std::string_view host);

// The registrable domain: the public suffix plus one label ("example.test"
// for "www.example.test").  host itself when it is a public suffix, an IP
// literal or a single label.
std::string_view registrable_domain(std::string_view host);

// The label left of the public suffix ("example" for "www.example.co.uk");
// empty when host is a public suffix itself.
std::string_view registrable_label(std::string_view host);

bool same_registrable_domain(std::string_view a, std::string_view b);

// True when a label of host starts with the IDNA ACE prefix "xn--" (any
// case) or host holds non-ASCII bytes: an internationalised name, whose
// displayed form may differ from the ASCII it resolves as.
bool is_internationalized_host(std::string_view host);

}  // namespace mxgate::filter
