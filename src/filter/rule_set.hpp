// The weighted spam rules: what a rule is, and the TOML file that lists them
// (the built-in set is rules/spam.toml, compiled into the binary; [filter]
// rules names a file that replaces it, [filter.rule_scores] re-weighs or,
// with 0, disables single rules).
//
// A rule is one regular expression against one view of the message, and a
// score added to the spam total when it matches (or, for a negated rule,
// when it does not), the model of SpamAssassin's header/body/rawbody/uri/
// full rules and Rspamd's regexp module.  The views (RuleTarget):
//   header   each top-level field named `field` (unfolded, RFC 2047 words
//            decoded), separately: a rule matches if any occurrence does;
//            an absent field matches nothing (so a negated rule fires).
//            field = "ALL": every field as "Name: value" lines.
//   body     the decoded Subject, the text/plain parts and the visible text
//            of the text/html parts (what the reader sees), lines kept.
//   rawbody  the decoded text/plain and text/html parts, markup included.
//   uri      every URL of the text and HTML bodies (and <a href>), one per line.
//   full     the message as received, headers and encoded body.
// Patterns are Vectorscan (Hyperscan) expressions: PCRE syntax without
// back-references or look-around; flags "i" (case-insensitive), "s" (dot
// matches newline), "m" (^ and $ at line ends).  Matching is on bytes.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.hpp"

namespace mxgate::filter {

enum class RuleTarget { header, body, rawbody, uri, full };

std::string_view to_string(RuleTarget target);

struct Rule {
  std::string name;      // [A-Z0-9_]+, unique; the name in findings and logs
  RuleTarget target = RuleTarget::body;
  std::string field;     // target header only: the field name, or "ALL"
  std::string pattern;
  bool caseless = false;   // flag "i"
  bool dotall = false;     // flag "s"
  bool multiline = false;  // flag "m"
  bool negate = false;     // fires when the pattern does not match
  double score = 0;        // may be negative (a sign of ham)
  // The score while the Bayes classifier is silent (not trained enough):
  // the rules then carry the decision alone, as SpamAssassin's score sets
  // without Bayes do.  Absent from the file: score.
  double score_no_bayes = 0;
  std::string description;
};

// Parses a rules file; errors name the file, the rule and the key
// ("rules.toml: rule[3] (SUBJ_FREE): unknown target \"bdy\"").
Result<std::vector<Rule>> parse_rules(std::string_view toml_text, std::string_view source);

// rules/spam.toml as it was at build time.
std::string_view default_rules_text();

// Applies [filter.rule_scores] (both scores of a rule): every name must be
// a rule of the set.
Result<void> apply_rule_scores(std::vector<Rule>& rules, const std::map<std::string, double>& scores);

}  // namespace mxgate::filter
