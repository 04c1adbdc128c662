// The Authentication-Results header field (RFC 8601): one field per message
// carrying SPF, DKIM and DMARC results under our authserv-id (the gateway's
// hostname), so mailbox rules and downstream filters need not redo the work.
//
// Section 5: a field that claims our authserv-id but arrived from outside is
// a forgery (or a loop) and is removed before ours is added.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sender_auth/dkim.hpp"
#include "sender_auth/dmarc.hpp"
#include "sender_auth/spf.hpp"

namespace mxgate::sender_auth {

struct AuthenticationResults {
  std::optional<SpfVerdict> spf;  // the MAIL FROM identity (HELO's for the null sender)
  std::string mail_from;          // smtp.mailfrom: the envelope sender, or postmaster@HELO
  std::vector<DkimVerdict> dkim;
  std::optional<DmarcVerdict> dmarc;
};

// "Authentication-Results: <authserv_id>;\r\n\tspf=pass smtp.mailfrom=...;\r\n\t..."
// ending in CRLF; "none" when no method ran.  Property values are reduced to
// characters RFC 8601's grammar allows unquoted; comments carry the reasons
// with parentheses and controls removed.
std::string authentication_results_field(std::string_view authserv_id, const AuthenticationResults& results);

// Byte ranges [begin, end) of content's header fields named
// Authentication-Results whose authserv-id equals ours (case-insensitive),
// each with its continuation lines and CRLF, in order.  Only the header
// block is looked at.  Pure.
std::vector<std::pair<std::size_t, std::size_t>> our_authentication_results(std::string_view content,
                                                                            std::string_view authserv_id);

}  // namespace mxgate::sender_auth
