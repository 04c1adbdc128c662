// One verdict per message from everything the checks found: each category's
// rule scores are summed and compared with its threshold ([filter]), a
// triggered category brings its configured action ([filter.actions]), a
// failed check brings on_failure, and the most severe action wins.  Pure.
//
// The SMTP reply for reject (550 5.7.1) and tempfail (451 4.7.1, RFC 3463
// "delivery not authorized" / "security or policy status") says only which
// category it was: rule names and scores stay in the log, so a sender cannot
// tune a message against the rules.
#pragma once

#include <array>
#include <string>

#include "config/config.hpp"
#include "filter/finding.hpp"

namespace mxgate::filter {

struct Verdict {
  config::FilterAction action = config::FilterAction::accept;
  std::array<double, 4> scores{};         // per Category, in enum order
  std::array<bool, 4> triggered{};        // score reached the category's threshold
  bool failed = false;                    // some check failed (see Findings::failures)
  std::string reason;                     // short reply text for reject/tempfail; empty otherwise
  std::string rules;                      // "GTUBE=1000,EXECUTABLE_ATTACHMENT=1" (bounded)
  std::string failures;                   // "clamd: connection refused" (bounded)

  double score(Category c) const { return scores[static_cast<std::size_t>(c)]; }
  bool is(Category c) const { return triggered[static_cast<std::size_t>(c)]; }
};

Verdict decide(const Findings& findings, const config::Filter& policy);

// The log line's "filter: <id>: ..." tail: action, every category's score
// against its threshold, the rules and failures.
std::string describe(const Verdict& verdict, const config::Filter& policy);

// Header fields (each ending in CRLF) for a delivered or quarantined
// message: X-mxgate-Verdict always, and X-Spam-Flag/X-Spam-Score/X-Spam-Status
// in SpamAssassin's form so existing mailbox rules keep working.
std::string verdict_headers(const Verdict& verdict, const config::Filter& policy);

}  // namespace mxgate::filter
