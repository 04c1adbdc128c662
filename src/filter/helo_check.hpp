// The client's EHLO/HELO name as evidence (RFC 5321 section 4.1.1.1: "the
// fully-qualified domain name of the SMTP client if one is available", else
// an address literal, section 4.1.3).  Mail servers greet with their own
// name; bots greet with "localhost", a bare word, a bare IP, somebody
// else's address literal, or the receiving server's own name.  Pure: the
// RCPT stage ([filter] reject_invalid_helo, Scanner::recipient_refusal)
// refuses on it, as Postfix's reject_invalid_helo_hostname and
// reject_non_fqdn_helo_hostname do.
#pragma once

#include <string>
#include <string_view>

namespace mxgate::filter {

// Empty when helo is acceptable from client_ip (as server::client_address
// gives it: an IPv4 client is never in its IPv4-mapped IPv6 form); otherwise
// why not:
//   "need fully-qualified hostname"   not an address literal, and not a
//                                     domain name of two or more LDH labels
//                                     ending in a letter label (a bare IP
//                                     without brackets lands here)
//   "invalid address literal"         "[...]" that is no IPv4 or IPv6 address
//   "address literal is not the client's address"
//   "that is our own hostname"        our_hostname (case-insensitive, a
//                                     final dot ignored) from outside
std::string helo_problem(std::string_view helo, std::string_view client_ip, std::string_view our_hostname);

}  // namespace mxgate::filter
