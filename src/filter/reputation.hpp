// Reputation: DNS blocklists for the client address (DNSBL, RFC 5782) and
// for the domains of URLs in the body (URI blocklists, the SURBL/URIBL
// convention of looking up the registrable domain, or the reversed IP of an
// IP-literal URL).  An entry is an A record in 127.0.0.0/8 at
// <reversed address or domain>.<zone>; 127.255.255.0/24 is what Spamhaus
// answers for refused queries, so it is an error, not a listing.
//
// A blocklist that does not answer is ignored (logged in the finding's
// absence): a list outage must not hold up all mail, as with Postfix's
// reject_rbl_client.  Relay clients are never looked up.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "dns/resolver.hpp"
#include "filter/finding.hpp"
#include "filter/parsed_message.hpp"
#include "filter/sender_checks.hpp"
#include "sender_auth/dmarc.hpp"

namespace mxgate::filter {

struct ReputationPolicy {
  std::vector<std::string> dnsbl;   // zones for the client address, e.g. "zen.spamhaus.org"
  std::vector<std::string> uribl;   // zones for URL domains, e.g. "multi.surbl.org"
  double dnsbl_score = 6.0;         // spam score of a listed client (RCVD_IN_DNSBL)
  double uribl_score = 6.0;         // spam score of a listed URL domain (URIBL_LISTED)
  std::size_t max_uribl_domains = 20;  // distinct URL domains looked up per message
};

// "4.3.2.1.zone" for 1.2.3.4; 32 reversed nibbles for IPv6 (RFC 5782 2.4).
std::string blocklist_name(const asio::ip::address& address, std::string_view zone);

// The distinct registrable domains (Public Suffix List) and IP literals of
// the URLs in the text and HTML bodies, in order of appearance, at most max.
std::vector<std::string> url_domains(const ParsedMessage& message, const sender_auth::PublicSuffixList& psl,
                                     std::size_t max);

// The client address against policy.dnsbl (nothing for relay clients or an
// unparsable address): needs only the connection, so the gateway starts it
// when the client connects (Scanner::start_client_dnsbl).
asio::awaitable<Findings> check_client_dnsbl(dns::Resolver& resolver, const std::string& client_address,
                                             bool relay_client, const ReputationPolicy& policy);

// The message's URL domains against policy.uribl (nothing for relay clients).
asio::awaitable<Findings> check_uribl(dns::Resolver& resolver, const sender_auth::PublicSuffixList& psl,
                                      const ParsedMessage& message, bool relay_client,
                                      const ReputationPolicy& policy);

// Both, one after the other (`mxgate check`).
asio::awaitable<Findings> check_reputation(dns::Resolver& resolver, const sender_auth::PublicSuffixList& psl,
                                           const ParsedMessage& message, const ScanContext& context,
                                           const ReputationPolicy& policy);

}  // namespace mxgate::filter
