#include "smtp/address.hpp"

#include <arpa/inet.h>
#include <strings.h>

#include <array>
#include <cstring>

namespace mxgate::smtp {
namespace {

constexpr std::size_t kMaxLocalPart = 64;
constexpr std::size_t kMaxDomain = 255;
constexpr std::size_t kMaxPath = 256;  // including the angle brackets
constexpr std::size_t kMaxLabel = 63;

bool is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_let_dig(unsigned char c) { return is_alpha(c) || is_digit(c); }

// RFC 5322 atext.
bool is_atext(unsigned char c) {
  if (is_let_dig(c)) return true;
  return std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr && c != '\0';
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

bool valid_dot_string(std::string_view s, bool utf8) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  char prev = 0;
  for (unsigned char c : s) {
    if (c == '.') {
      if (prev == '.') return false;
    } else if (!is_atext(c) && !(utf8 && c >= 0x80)) {
      return false;
    }
    prev = static_cast<char>(c);
  }
  return true;
}

// Quoted-string including its quotes: qtextSMTP and quoted-pairSMTP.
bool valid_quoted_string(std::string_view s, bool utf8) {
  if (s.size() < 2 || s.front() != '"' || s.back() != '"') return false;
  for (std::size_t i = 1; i + 1 < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\\') {
      if (i + 2 >= s.size()) return false;
      const auto next = static_cast<unsigned char>(s[++i]);
      if (next < 32 || next > 126) return false;
    } else if (c == '"') {
      return false;
    } else if (!((c >= 32 && c <= 126) || (utf8 && c >= 0x80))) {
      return false;
    }
  }
  return true;
}

// Finds the '@' that separates local part and domain: the last one outside a
// quoted string.
std::size_t find_at(std::string_view mailbox) {
  bool quoted = false;
  std::size_t at = std::string_view::npos;
  for (std::size_t i = 0; i < mailbox.size(); ++i) {
    const char c = mailbox[i];
    if (quoted && c == '\\') {
      ++i;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (c == '@' && !quoted) {
      at = i;
    }
  }
  return quoted ? std::string_view::npos : at;
}

// A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain.  Kept only
// for syntax (RFC 5321 section 4.1.2: "MUST accept and ignore").
bool valid_source_route(std::string_view adl, bool utf8) {
  while (!adl.empty()) {
    if (adl.front() != '@') return false;
    const auto comma = adl.find(',');
    const auto domain = adl.substr(1, comma == std::string_view::npos ? adl.npos : comma - 1);
    if (!is_valid_domain(domain, utf8)) return false;
    if (comma == std::string_view::npos) break;
    adl.remove_prefix(comma + 1);
    if (adl.empty()) return false;
  }
  return true;
}

}  // namespace

bool is_valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t len = 0;
    unsigned min = 0;
    unsigned cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, min = 0x80, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, min = 0x800, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, min = 0x10000, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > text.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

bool is_valid_address_literal(std::string_view text) {
  if (text.size() < 3 || text.front() != '[' || text.back() != ']') return false;
  const std::string inner(text.substr(1, text.size() - 2));
  std::array<unsigned char, 16> buf{};
  if (inet_pton(AF_INET, inner.c_str(), buf.data()) == 1) return true;
  const auto colon = inner.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  const std::string tag = inner.substr(0, colon);
  const std::string content = inner.substr(colon + 1);
  if (tag.size() == 4 && (tag[0] == 'I' || tag[0] == 'i') && (tag[1] == 'P' || tag[1] == 'p') &&
      (tag[2] == 'v' || tag[2] == 'V') && tag[3] == '6')
    return inet_pton(AF_INET6, content.c_str(), buf.data()) == 1;
  // General-address-literal: Standardized-tag ":" 1*dcontent.
  for (unsigned char c : tag)
    if (!is_let_dig(c) && c != '-') return false;
  if (content.empty()) return false;
  for (unsigned char c : content)
    if (!((c >= 33 && c <= 90) || (c >= 94 && c <= 126))) return false;
  return true;
}

bool is_valid_domain(std::string_view text, bool utf8) {
  if (text.empty() || text.size() > kMaxDomain) return false;
  if (text.front() == '[') return is_valid_address_literal(text);
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find('.', start);
    if (end == std::string_view::npos) end = text.size();
    const auto label = text.substr(start, end - start);
    if (label.empty() || label.size() > kMaxLabel) return false;
    for (std::size_t i = 0; i < label.size(); ++i) {
      const auto c = static_cast<unsigned char>(label[i]);
      const bool ok = is_let_dig(c) || (utf8 && c >= 0x80) ||
                      (c == '-' && i != 0 && i + 1 != label.size());
      if (!ok) return false;
    }
    if (end == text.size()) break;
    start = end + 1;
    if (start == text.size()) return false;  // trailing dot
  }
  return !utf8 || is_valid_utf8(text);
}

ParsedPath parse_path(std::string_view text, const PathOptions& options) {
  ParsedPath result;
  result.error = AddressError::syntax;
  if (text.empty() || text.front() != '<') return result;
  // '>' may appear inside a quoted local part; find the closing one outside quotes.
  std::size_t close = std::string_view::npos;
  bool quoted = false;
  for (std::size_t i = 1; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted && c == '\\') {
      ++i;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (c == '>' && !quoted) {
      close = i;
      break;
    }
  }
  if (close == std::string_view::npos || close + 1 > kMaxPath) return result;
  std::string_view rest = text.substr(close + 1);
  if (!rest.empty() && rest.front() != ' ') return result;
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  result.rest = rest;

  std::string_view inner = text.substr(1, close - 1);
  if (inner.empty()) {
    if (options.allow_null) result.error = AddressError::none;
    return result;
  }
  const bool utf8_bytes = !is_ascii(inner);
  if (utf8_bytes && !is_valid_utf8(inner)) return result;
  // Parse as if UTF-8 were allowed, then tell the caller which reply applies.
  const bool allow_utf8 = true;

  if (inner.front() == '@') {
    const auto colon = inner.find(':');
    if (colon == std::string_view::npos || !valid_source_route(inner.substr(0, colon), allow_utf8))
      return result;
    inner.remove_prefix(colon + 1);
  }

  const auto at = find_at(inner);
  if (at == std::string_view::npos) {
    // RFC 5321 section 4.1.1.3: "Postmaster" without a domain must be accepted.
    if (options.allow_postmaster && inner.size() == 10 &&
        strncasecmp(inner.data(), "postmaster", 10) == 0) {
      result.mailbox = std::string(inner);
      result.error = AddressError::none;
    }
    return result;
  }
  const auto local = inner.substr(0, at);
  const auto domain = inner.substr(at + 1);
  if (local.empty() || local.size() > kMaxLocalPart) return result;
  const bool local_ok = local.front() == '"' ? valid_quoted_string(local, allow_utf8)
                                             : valid_dot_string(local, allow_utf8);
  if (!local_ok || !is_valid_domain(domain, allow_utf8)) return result;

  result.mailbox = std::string(inner);
  result.non_ascii = !is_ascii(result.mailbox);
  result.error = (utf8_bytes && !options.utf8) ? AddressError::needs_smtputf8 : AddressError::none;
  return result;
}

}  // namespace mxgate::smtp
