// Sender authentication as the content filter uses it: SPF, DKIM and DMARC
// (src/sender_auth/) run for a message from an outside client, their results
// go into the Authentication-Results field, and become findings:
//
//   SPF_FAIL 1.0, SPF_SOFTFAIL 0.7                 spam (SpamAssassin's weights, rounded)
//   DKIM_INVALID 0.1, DKIM_VALID -0.1              spam
//   DMARC_POLICY_REJECT 1.0                        phishing: the owner asks for refusal
//   DMARC_POLICY_QUARANTINE 3.0, DMARC_POLICY_NONE 0.1   spam
//   DMARC_FAIL_OWN_DOMAIN 1.0                      impersonation: mail claiming to be from
//                                                  a protected domain that its own DMARC
//                                                  record does not vouch for
//
// A temporary DNS error in any of the three is a failed check (on_failure),
// never a pass.  Mail from relay clients (relay_networks: our own systems)
// is not checked: what it claims is ours to vouch for.
#pragma once

#include <asio/awaitable.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dns/resolver.hpp"
#include "filter/finding.hpp"
#include "filter/pending_result.hpp"
#include "sender_auth/spf.hpp"
#include "filter/parsed_message.hpp"
#include "milter/client.hpp"
#include "sender_auth/authentication_results.hpp"
#include "sender_auth/dmarc.hpp"

namespace mxgate::filter {

// Who sent the message, as the SMTP session saw it.
struct ScanContext {
  std::string client_address;  // empty: no sender authentication (e.g. `mxgate check` without --client)
  std::uint16_t client_port = 0;
  std::string helo;
  std::string sender;  // MAIL FROM without <>; empty for the null sender
  std::vector<std::string> recipients;
  std::string queue_id;
  bool relay_client = false;  // inside relay_networks
  // The listener's milters, run in order after mxgate's own checks; null or
  // empty: none.  Owned by the server.
  const std::vector<milter::MilterEndpoint>* milters = nullptr;
  // Checks started before the end of DATA (pending_result.hpp); null: they
  // run with the message.  The client's DNSBL listing, from the connect
  // stage (Scanner::start_client_dnsbl), and SPF for this transaction's MAIL
  // FROM, from the MAIL stage (Scanner::start_mail_from_spf).
  std::shared_ptr<PendingResult<Findings>> client_dnsbl;
  std::shared_ptr<PendingResult<sender_auth::SpfVerdict>> mail_from_spf;
};

struct SenderCheck {
  Findings findings;
  std::optional<sender_auth::AuthenticationResults> results;  // unset when nothing ran
};

asio::awaitable<SenderCheck> check_sender(dns::Resolver& resolver, const sender_auth::PublicSuffixList& psl,
                                          std::string_view content, const ParsedMessage& message,
                                          const ScanContext& context,
                                          const std::vector<std::string>& protected_domains);

}  // namespace mxgate::filter
