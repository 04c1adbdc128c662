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
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "dns/resolver.hpp"
#include "filter/clamd_client.hpp"
#include "filter/finding.hpp"
#include "filter/parsed_message.hpp"
#include "filter/sender_checks.hpp"
#include "filter/verdict.hpp"
#include "sender_auth/dmarc.hpp"
#include "util/result.hpp"

namespace mxgate::filter {

// What the scan found, before the policy decides.
struct Examination {
  Findings findings;
  std::optional<sender_auth::AuthenticationResults> authentication;
};

struct ScanOutcome {
  Verdict verdict;
  // Header fields to add below our Received field (CRLF-terminated):
  // Authentication-Results when sender authentication ran, then the verdict.
  std::string header_fields;
};

class Scanner {
 public:
  // Refuses a bad [filter] clamd endpoint ("filter.clamd: ...");
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

  // Every check, on the caller's executor.
  asio::awaitable<Examination> examine(std::string_view content, const ScanContext& context) const;
  // examine(), decide() and the header fields for delivered or held mail.
  asio::awaitable<ScanOutcome> scan(std::string_view content, const ScanContext& context) const;

  // The checks without I/O, for the unit tests.
  Findings local_checks(std::string_view content, const ParsedMessage& message) const;
  ParsedMessage parse(std::string_view content) const;

 private:
  Scanner(const config::Filter& policy, std::string authserv_id, sender_auth::PublicSuffixList psl)
      : policy_(policy), authserv_id_(std::move(authserv_id)), psl_(std::move(psl)) {}

  asio::awaitable<Findings> scan_parts(const ParsedMessage& message) const;

  config::Filter policy_;
  std::string authserv_id_;
  sender_auth::PublicSuffixList psl_;
  std::optional<ClamdEndpoint> clamd_;
  dns::Resolver* resolver_ = nullptr;
};

}  // namespace mxgate::filter
