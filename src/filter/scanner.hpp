// The content filter as the SMTP server calls it at the end of DATA/BDAT,
// while the client waits for the reply: parse the MIME tree, run the local
// checks (spam rules, phishing, impersonation, attachment types), stream
// every leaf part to clamd, and decide one verdict (verdict.hpp).
//
// Budget.  The whole scan has [filter] time_budget; clamd gets what is left
// of it per part.  A check that fails or runs out of time is a failure, never
// a pass: the verdict then follows on_failure (tempfail by default, so the
// sender retries instead of getting unscanned mail through).
#pragma once

#include <asio/awaitable.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "filter/clamd_client.hpp"
#include "filter/finding.hpp"
#include "filter/parsed_message.hpp"
#include "filter/verdict.hpp"
#include "util/result.hpp"

namespace mxgate::filter {

class Scanner {
 public:
  // Refuses a bad [filter] clamd endpoint ("filter.clamd: ...").
  static Result<std::unique_ptr<Scanner>> create(const config::Filter& policy);

  const config::Filter& policy() const { return policy_; }
  // "filter: enabled, antivirus clamd unix:/run/clamav/clamd.ctl" or "... no antivirus (filter.clamd unset)".
  std::string describe() const;
  // Pings clamd once (for the start-up log): empty when it answered.
  asio::awaitable<std::string> check_clamd() const;

  // Every check, on the caller's executor, and the verdict from them.
  asio::awaitable<Findings> examine(std::string_view content) const;
  asio::awaitable<Verdict> scan(std::string_view content) const;

  // The checks without I/O, for `mxgate check` and the unit tests.
  Findings local_checks(std::string_view content, const ParsedMessage& message) const;
  ParsedMessage parse(std::string_view content) const;

 private:
  explicit Scanner(const config::Filter& policy) : policy_(policy) {}

  config::Filter policy_;
  std::optional<ClamdEndpoint> clamd_;
};

}  // namespace mxgate::filter
