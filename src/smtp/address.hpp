// Envelope address syntax: RFC 5321 section 4.1.2 (Path, Mailbox, Local-part,
// Domain, address-literal) with the RFC 6531 section 3.3 extension that lets
// UTF-8 into local parts and domains when the transaction uses SMTPUTF8.
// Size limits are RFC 5321 section 4.5.3.1: local part 64, domain 255, path
// 256 octets.
#pragma once

#include <string>
#include <string_view>

namespace mxgate::smtp {

enum class AddressError {
  none,
  syntax,            // 501 5.1.7 / 5.1.3
  needs_smtputf8,    // 553 5.6.7: valid only as an RFC 6531 address
};

struct ParsedPath {
  AddressError error = AddressError::none;
  std::string mailbox;        // "local@domain", source route dropped; empty for <>
  std::string_view rest;      // what follows '>' (the ESMTP parameters), leading spaces removed
  bool non_ascii = false;     // the mailbox holds UTF-8
};

struct PathOptions {
  bool allow_null = false;        // "<>" (reverse-path only)
  bool allow_postmaster = false;  // "<Postmaster>" without a domain (forward-path only)
  bool utf8 = false;              // SMTPUTF8 given on MAIL
};

// Parses "<...>" at the start of text.  A missing '<' or '>' is a syntax error.
ParsedPath parse_path(std::string_view text, const PathOptions& options);

// True when text is a syntactically valid domain (LDH labels, or U-labels when
// utf8) or address literal; used for the EHLO argument too.
bool is_valid_domain(std::string_view text, bool utf8);
bool is_valid_address_literal(std::string_view text);

// True when text is well-formed UTF-8 (RFC 3629), no overlongs or surrogates.
bool is_valid_utf8(std::string_view text);

}  // namespace mxgate::smtp
