// The content filter as the SMTP server calls it at the end of DATA/BDAT,
// while the client waits for the reply: parse the MIME tree, run the local
// checks (spam rules, phishing, impersonation, attachment types), sender
// authentication (SPF, DKIM, DMARC) and clamd on every leaf part, and decide
// one verdict (verdict.hpp).
//
// Budget.  Sender authentication and clamd run side by side under one
// timer of [filter] time_budget; if it fires first, the scan is a failed
// check (on_failure), never a pass.  The local checks are CPU only.
#pragma once

#include <asio/awaitable.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "dns/resolver.hpp"
#include "filter/bayes.hpp"
#include "filter/clamd_client.hpp"
#include "filter/finding.hpp"
#include "filter/parsed_message.hpp"
#include "filter/rule_engine.hpp"
#include "filter/sender_checks.hpp"
#include "filter/verdict.hpp"
#include "sender_auth/dmarc.hpp"
#include "smtp/reply.hpp"
#include "util/result.hpp"

namespace mxgate::filter {

// What the listener's milters said, folded into the verdict: the most
// severe answer counts (reject, then quarantine, then tempfail; discard is
// kept as quarantine: mxgate never drops accepted mail silently), and their
// header changes apply to mail that is delivered or held.
struct MilterOutcome {
  config::FilterAction action = config::FilterAction::accept;
  std::string reply;       // the deciding milter's own "5xx x.y.z text", if it gave one
  std::string decided_by;  // its endpoint
  std::vector<milter::HeaderChange> header_changes;
  std::vector<std::string> notes;  // for the log: what each milter said
};

// What the scan found, before the policy decides.
struct Examination {
  Findings findings;
  std::optional<sender_auth::AuthenticationResults> authentication;
  MilterOutcome milters;
};

struct ScanOutcome {
  Verdict verdict;
  // Header fields to add below our Received field (CRLF-terminated):
  // Authentication-Results when sender authentication ran, then the verdict.
  std::string header_fields;
  std::vector<milter::HeaderChange> header_changes;  // the milters', in order
  std::string milter_log;                            // empty when no milter ran
};

// Raises the verdict to what the milters said when that is more severe;
// a milter's own reply text replaces ours.  Pure.
void fold_milters(Verdict& verdict, const MilterOutcome& milters);

class Scanner {
 public:
  // Refuses a bad [filter] clamd endpoint ("filter.clamd: ...") and spam
  // rules that do not load or compile ("filter.rules: ...");
  // authserv_id names us in Authentication-Results (the hostname).
  static Result<std::unique_ptr<Scanner>> create(const config::Filter& policy, std::string authserv_id);

  // Sender authentication needs DNS on the caller's event loop; without a
  // resolver it is skipped.  The resolver outlives the scanner.
  void set_resolver(dns::Resolver* resolver) { resolver_ = resolver; }

  const config::Filter& policy() const { return policy_; }
  const std::string& authserv_id() const { return authserv_id_; }
  // One line for the start-up log: antivirus, sender authentication, counts.
  std::string describe() const;
  // Pings clamd once (for the start-up log): empty when it answered.
  asio::awaitable<std::string> check_clamd() const;

  // The connect stage: starts the client's DNSBL lookup on executor (the
  // connection's); null when there is nothing to look up (no resolver, no
  // DNSBL zone, a relay client).  A listing is logged when it is found,
  // under peer ("ip:port", naming the connection).
  std::shared_ptr<PendingResult<Findings>> start_client_dnsbl(const asio::any_io_executor& executor,
                                                              const std::string& client_address, bool relay_client,
                                                              const std::string& peer) const;
  // The MAIL stage: starts SPF for the MAIL FROM identity (RFC 7208 section
  // 2.4) as soon as MAIL is accepted; null without a resolver, for a relay
  // client or an unparsable address.  The result is logged when it is in.
  std::shared_ptr<PendingResult<sender_auth::SpfVerdict>> start_mail_from_spf(
      const asio::any_io_executor& executor, const std::string& client_address, bool relay_client,
      const std::string& helo, const std::string& sender, const std::string& peer) const;

  // The RCPT stage: true when recipients must wait for recipient_refusal()
  // ([filter] reject_invalid_helo, reject_dnsbl_clients or reject_spf_fail).
  bool checks_recipients() const {
    return policy_.reject_dnsbl_clients || policy_.reject_spf_fail || policy_.reject_invalid_helo;
  }
  // The reply that refuses recipient, if any: 550 5.7.1 for an EHLO/HELO
  // name helo_problem() objects to (reject_invalid_helo) or for a client on
  // a dnsbl zone (reject_dnsbl_clients), 550 5.7.23 (RFC 7372 section 3.2)
  // when SPF for MAIL FROM failed (reject_spf_fail; RFC 7208 section 8.4).
  // Reads context.helo, context.client_dnsbl and context.mail_from_spf,
  // waiting for the last two at most time_budget; a check still running,
  // failed or absent refuses nothing (the verdict after DATA weighs what it
  // finds).  A refusal is logged under peer.
  asio::awaitable<std::optional<smtp::Reply>> recipient_refusal(const ScanContext& context,
                                                                std::string_view recipient,
                                                                const std::string& peer) const;

  // Every check, on the caller's executor.
  asio::awaitable<Examination> examine(std::string_view content, const ScanContext& context) const;
  // examine(), decide() and the header fields for delivered or held mail.
  asio::awaitable<ScanOutcome> scan(std::string_view content, const ScanContext& context) const;

  // The checks without I/O, for the unit tests.
  Findings local_checks(std::string_view content, const ParsedMessage& message) const;
  ParsedMessage parse(std::string_view content) const;

  // How often the Bayes store file is looked at for changes (tests shorten it).
  void set_bayes_recheck(std::chrono::milliseconds every) { bayes_recheck_ = every; }

 private:
  Scanner(const config::Filter& policy, std::string authserv_id, sender_auth::PublicSuffixList psl)
      : policy_(policy), authserv_id_(std::move(authserv_id)), psl_(std::move(psl)) {}

  asio::awaitable<Findings> scan_parts(const ParsedMessage& message) const;
  asio::awaitable<MilterOutcome> run_milters(std::string_view content, const ScanContext& context,
                                             Findings& findings) const;
  // Opens the Bayes store when it appears and reopens it when `mxgate
  // learn` changed it, looking at most once per bayes_recheck_.  The first
  // open is synchronous: no message is scored without a store that exists.
  // A reopen (35-45 ms for 71k tokens, ~0.5 s for a million) runs on a
  // worker thread while the old snapshot keeps scoring, and the new one is
  // swapped in by the first check after it is ready: the network thread
  // never waits for it.
  void refresh_bayes() const;
  struct BayesLoad {
    Result<std::unique_ptr<BayesStore>> store;
    std::uint64_t inode = 0;
  };
  void adopt_bayes(BayesLoad load) const;

  config::Filter policy_;
  std::string authserv_id_;
  sender_auth::PublicSuffixList psl_;
  std::optional<ClamdEndpoint> clamd_;
  std::unique_ptr<RuleEngine> rules_;
  dns::Resolver* resolver_ = nullptr;
  // The classifier's snapshot; absent until the store exists.  Mutable: a
  // cache refreshed from the file, not state of the scan.
  mutable std::unique_ptr<BayesStore> bayes_;
  mutable std::chrono::steady_clock::time_point bayes_checked_{};
  mutable std::string bayes_problem_;  // the last open error, logged once
  mutable std::uint64_t bayes_inode_ = 0;  // a store replaced by a new file is reopened too
  std::chrono::milliseconds bayes_recheck_{std::chrono::seconds(60)};
  // A reopen in progress; its destructor waits for the worker thread.
  mutable std::future<BayesLoad> bayes_loading_;
};

}  // namespace mxgate::filter
