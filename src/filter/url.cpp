#include "filter/url.hpp"

#include <algorithm>
#include <array>
#include <cstdint>

namespace mxgate::filter {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }

bool starts_with_ci(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (lower(text[i]) != prefix[i]) return false;
  }
  return true;
}

// Where a linkified URL ends in running text.
bool ends_url(std::string_view text, std::size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  if (c <= 0x20 || c == 0x7f) return true;
  if (c == '<' || c == '>' || c == '"' || c == '`') return true;
  // U+00A0 NO-BREAK SPACE, common in HTML-to-text conversions.
  return c == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) == 0xa0;
}

// Length of a URL starting at text[i], or 0 when none starts there.
std::size_t url_prefix_at(std::string_view text, std::size_t i) {
  const std::string_view rest = text.substr(i);
  if (starts_with_ci(rest, "http://")) return 7;
  if (starts_with_ci(rest, "https://")) return 8;
  if (starts_with_ci(rest, "www.")) {
    // Only at the start of a word: not "foo.www.bar" nor "//www." inside a path.
    if (i > 0) {
      const char before = text[i - 1];
      if (is_alnum(before) || before == '.' || before == '-' || before == '_' || before == '/' ||
          before == '@' || before == ':' || before == '%') {
        return 0;
      }
    }
    return 4;
  }
  return 0;
}

std::string_view trim_trailing_punctuation(std::string_view url) {
  while (!url.empty()) {
    const char c = url.back();
    if (c == '.' || c == ',' || c == ';' || c == ':' || c == '!' || c == '?' || c == '\'' || c == '*') {
      url.remove_suffix(1);
      continue;
    }
    if (c == ')' || c == ']') {
      const char open = c == ')' ? '(' : '[';
      if (std::count(url.begin(), url.end(), open) < std::count(url.begin(), url.end(), c)) {
        url.remove_suffix(1);
        continue;
      }
    }
    break;
  }
  return url;
}

int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  const char l = lower(c);
  if (l >= 'a' && l <= 'f') return l - 'a' + 10;
  return -1;
}

// WHATWG "IPv4 number parser"; nullopt on anything that is not a number.
std::optional<std::uint64_t> parse_ipv4_number(std::string_view part) {
  if (part.empty()) return std::nullopt;
  unsigned radix = 10;
  if (part.size() >= 2 && part[0] == '0' && (part[1] == 'x' || part[1] == 'X')) {
    radix = 16;
    part.remove_prefix(2);
  } else if (part.size() >= 2 && part[0] == '0') {
    radix = 8;
    part.remove_prefix(1);
  }
  std::uint64_t value = 0;
  for (const char c : part) {
    const int d = hex_value(c);
    if (d < 0 || static_cast<unsigned>(d) >= radix) return std::nullopt;
    value = value * radix + static_cast<unsigned>(d);
    if (value > 0xffffffffULL) return std::uint64_t{0x100000000ULL};  // out of range, still a number
  }
  return value;
}

// WHATWG "ends in a number": the last label is decimal digits or 0x-hex, so a
// browser parses the whole host as IPv4 (and fails when that is invalid).
bool ends_in_number(std::string_view host) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  const auto dot = host.rfind('.');
  const std::string_view last = dot == std::string_view::npos ? host : host.substr(dot + 1);
  if (last.empty()) return false;
  if (std::all_of(last.begin(), last.end(), is_digit)) return true;
  if (last.size() >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X')) {
    return std::all_of(last.begin() + 2, last.end(), [](char c) { return hex_value(c) >= 0; });
  }
  return false;
}

// Percent-decodes a host; "%zz" stays as it is (and is then rejected as a
// forbidden '%').
std::string percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      const int hi = hex_value(text[i + 1]);
      const int lo = hex_value(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

// UTS #46 section 2.3: U+3002, U+FF0E and U+FF61 are label separators.
std::string map_ideographic_full_stops(std::string_view host) {
  std::string out;
  out.reserve(host.size());
  for (std::size_t i = 0; i < host.size(); ++i) {
    const std::string_view rest = host.substr(i);
    if (rest.starts_with("\xe3\x80\x82") || rest.starts_with("\xef\xbc\x8e") ||
        rest.starts_with("\xef\xbd\xa1")) {
      out.push_back('.');
      i += 2;
      continue;
    }
    out.push_back(lower(host[i]));
  }
  return out;
}

// WHATWG "forbidden domain code point" (ASCII part): a browser refuses the URL.
bool is_forbidden_host_byte(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  if (c <= 0x20 || c == 0x7f) return true;
  static constexpr std::string_view kForbidden = "#%/:<>?@[\\]^|";
  return kForbidden.find(ch) != std::string_view::npos;
}

bool is_special_scheme(std::string_view scheme) {
  return scheme == "http" || scheme == "https" || scheme == "ftp" || scheme == "ws" || scheme == "wss";
}

// Second-level labels under which two-letter country-code registries sell
// names ("example.co.uk", "example.com.au", "example.ne.jp").
constexpr std::array<std::string_view, 18> kSecondLevelLabels = {"ac",  "co",   "com", "edu", "go",  "gob",
                                                                 "gov", "govt", "gv",  "ltd", "mil", "ne",
                                                                 "net", "nic",  "nom", "or",  "org", "plc"};

bool is_ip_like(std::string_view host) {
  return host.find(':') != std::string_view::npos || ends_in_number(host);
}

}  // namespace

FoundUrls find_urls(std::string_view text, std::size_t max_urls) {
  FoundUrls found;
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t prefix = url_prefix_at(text, i);
    if (prefix == 0) {
      ++i;
      continue;
    }
    std::size_t end = i + prefix;
    while (end < text.size() && !ends_url(text, end)) ++end;
    const std::string_view url = trim_trailing_punctuation(text.substr(i, std::min(end - i, kMaxUrlLength)));
    if (url.size() > prefix) {
      if (found.urls.size() >= max_urls) {
        found.truncated = true;
        break;
      }
      found.urls.emplace_back(url);
    }
    i = end;
  }
  return found;
}

std::optional<ParsedUrl> parse_url(std::string_view input) {
  // WHATWG: leading and trailing C0 controls and spaces are stripped, tabs
  // and newlines anywhere are removed ("ht\ntp://" is "http://").
  while (!input.empty() && static_cast<unsigned char>(input.front()) <= 0x20) input.remove_prefix(1);
  while (!input.empty() && static_cast<unsigned char>(input.back()) <= 0x20) input.remove_suffix(1);
  std::string url;
  url.reserve(std::min(input.size(), kMaxUrlLength));
  for (const char c : input) {
    if (c == '\t' || c == '\n' || c == '\r') continue;
    url.push_back(c);
  }
  std::string_view rest = url;

  ParsedUrl parsed;
  bool special = true;
  std::size_t scheme_end = 0;
  if (!rest.empty() && is_alpha(rest[0])) {
    scheme_end = 1;
    while (scheme_end < rest.size() && (is_alnum(rest[scheme_end]) || rest[scheme_end] == '+' ||
                                        rest[scheme_end] == '-' || rest[scheme_end] == '.')) {
      ++scheme_end;
    }
    if (scheme_end < rest.size() && rest[scheme_end] == ':') {
      for (std::size_t k = 0; k < scheme_end; ++k) parsed.scheme.push_back(lower(rest[k]));
      rest.remove_prefix(scheme_end + 1);
    } else {
      scheme_end = 0;
    }
  }
  if (!parsed.scheme.empty()) {
    special = is_special_scheme(parsed.scheme);
    if (special) {
      // "http:evil.test", "http:/\evil.test" all reach evil.test.
      while (!rest.empty() && (rest.front() == '/' || rest.front() == '\\')) rest.remove_prefix(1);
    } else if (rest.starts_with("//")) {
      rest.remove_prefix(2);
    } else {
      return std::nullopt;  // mailto:, tel:, javascript:, data:, cid:
    }
  } else if (rest.starts_with("//") || rest.starts_with("\\\\") || rest.starts_with("/\\") ||
             rest.starts_with("\\/")) {
    rest.remove_prefix(2);
  } else if (!starts_with_ci(rest, "www.")) {
    return std::nullopt;  // a relative reference
  }

  std::size_t authority_end = 0;
  while (authority_end < rest.size()) {
    const char c = rest[authority_end];
    if (c == '/' || c == '?' || c == '#' || (special && c == '\\')) break;
    ++authority_end;
  }
  std::string_view authority = rest.substr(0, authority_end);
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);

  if (authority.starts_with("[")) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view inside = authority.substr(1, close - 1);
    if (inside.empty() || inside.find(':') == std::string_view::npos) return std::nullopt;
    for (const char c : inside) {
      if (hex_value(c) < 0 && c != ':' && c != '.') return std::nullopt;
      parsed.host.push_back(lower(c));
    }
    parsed.ip_literal = true;
    return parsed;
  }
  if (const auto colon = authority.find(':'); colon != std::string_view::npos) {
    authority = authority.substr(0, colon);
  }
  if (authority.size() > 3 * kMaxHostLength) return std::nullopt;
  std::string host = map_ideographic_full_stops(percent_decode(authority));
  if (std::any_of(host.begin(), host.end(), is_forbidden_host_byte)) return std::nullopt;
  if (!host.empty() && host.back() == '.') host.pop_back();
  if (host.empty() || host.size() > kMaxHostLength) return std::nullopt;
  if (ends_in_number(host)) {
    auto ipv4 = parse_ipv4(host);
    if (!ipv4) return std::nullopt;  // the browser refuses the URL
    parsed.host = std::move(*ipv4);
    parsed.ip_literal = true;
    return parsed;
  }
  parsed.host = std::move(host);
  return parsed;
}

std::optional<std::string> parse_ipv4(std::string_view host) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const auto dot = host.find('.', start);
    parts.push_back(host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
    if (parts.size() > 5) return std::nullopt;
  }
  if (parts.size() > 1 && parts.back().empty()) parts.pop_back();
  if (parts.empty() || parts.size() > 4) return std::nullopt;

  std::vector<std::uint64_t> numbers;
  for (const auto part : parts) {
    const auto n = parse_ipv4_number(part);
    if (!n) return std::nullopt;
    numbers.push_back(*n);
  }
  for (std::size_t k = 0; k + 1 < numbers.size(); ++k) {
    if (numbers[k] > 255) return std::nullopt;
  }
  const unsigned rest_bytes = static_cast<unsigned>(5 - numbers.size());
  if (numbers.back() >= (std::uint64_t{1} << (8 * rest_bytes))) return std::nullopt;
  std::uint64_t address = numbers.back();
  for (std::size_t k = 0; k + 1 < numbers.size(); ++k) address += numbers[k] << (8 * (3 - k));

  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) {
    if (!out.empty()) out.push_back('.');
    out += std::to_string((address >> shift) & 0xff);
  }
  return out;
}

bool is_same_or_subdomain(std::string_view host, std::string_view domain) {
  if (domain.empty()) return false;
  if (host == domain) return true;
  return host.size() > domain.size() && host.ends_with(domain) &&
         host[host.size() - domain.size() - 1] == '.';
}

std::string_view public_suffix(std::string_view host) {
  if (is_ip_like(host)) return host;
  const auto last_dot = host.rfind('.');
  if (last_dot == std::string_view::npos) return host;
  const std::string_view tld = host.substr(last_dot + 1);
  const std::string_view head = host.substr(0, last_dot);
  const auto second_dot = head.rfind('.');
  const std::string_view second = second_dot == std::string_view::npos ? head : head.substr(second_dot + 1);
  const bool cc_tld = tld.size() == 2 && is_alpha(tld[0]) && is_alpha(tld[1]);
  if (cc_tld &&
      std::find(kSecondLevelLabels.begin(), kSecondLevelLabels.end(), second) != kSecondLevelLabels.end()) {
    return host.substr(second_dot == std::string_view::npos ? 0 : second_dot + 1);
  }
  return tld;
}

std::string_view registrable_domain(std::string_view host) {
  const std::string_view suffix = public_suffix(host);
  if (suffix.size() >= host.size()) return host;
  const std::string_view head = host.substr(0, host.size() - suffix.size() - 1);
  const auto dot = head.rfind('.');
  return host.substr(dot == std::string_view::npos ? 0 : dot + 1);
}

std::string_view registrable_label(std::string_view host) {
  const std::string_view suffix = public_suffix(host);
  if (suffix.size() >= host.size()) return {};
  const std::string_view head = host.substr(0, host.size() - suffix.size() - 1);
  const auto dot = head.rfind('.');
  return dot == std::string_view::npos ? head : head.substr(dot + 1);
}

bool same_registrable_domain(std::string_view a, std::string_view b) {
  return registrable_domain(a) == registrable_domain(b);
}

bool is_internationalized_host(std::string_view host) {
  if (std::any_of(host.begin(), host.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
    return true;
  }
  std::size_t start = 0;
  while (start <= host.size()) {
    if (starts_with_ci(host.substr(start), "xn--")) return true;
    const auto dot = host.find('.', start);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return false;
}

}  // namespace mxgate::filter
