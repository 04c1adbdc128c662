// What one check found in a message.  Checks never decide what happens to
// the message: each reports findings (a category, the rule that fired and
// its weight) and filter::decide() adds them up into one verdict under the
// operator's [filter] policy, the way SpamAssassin and Rspamd sum rule scores.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mxgate::filter {

// The threat classes an operator assigns actions to ([filter.actions]).
enum class Category { spam, phishing, malware, impersonation };

std::string_view to_string(Category category);

struct Finding {
  Category category = Category::spam;
  std::string rule;    // upper-case rule name, e.g. "GTUBE", "EXECUTABLE_ATTACHMENT"
  double score = 0;    // added to the category's total
  std::string detail;  // for the log and the quarantine only, never for the SMTP reply
};

// A check that could not give an answer (clamd unreachable, DNS timeout,
// a limit that stopped the scan): the message is not "clean", it follows
// [filter] on_failure.
struct CheckFailure {
  std::string check;   // "clamd", "mime", ...
  std::string reason;
};

struct Findings {
  std::vector<Finding> findings;
  std::vector<CheckFailure> failures;

  void add(Category category, std::string rule, double score, std::string detail = {}) {
    findings.push_back(Finding{category, std::move(rule), score, std::move(detail)});
  }
  void fail(std::string check, std::string reason) {
    failures.push_back(CheckFailure{std::move(check), std::move(reason)});
  }
  void merge(Findings other) {
    for (auto& f : other.findings) findings.push_back(std::move(f));
    for (auto& f : other.failures) failures.push_back(std::move(f));
  }
};

}  // namespace mxgate::filter
