#include "filter/verdict.hpp"

#include <cstdio>
#include <optional>

namespace mxgate::filter {
namespace {

using config::FilterAction;

constexpr std::size_t kMaxListed = 400;  // bytes of rule names in the log and header

std::string format_score(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f", value);
  return buffer;
}

double threshold(Category category, const config::Filter& policy) {
  switch (category) {
    case Category::spam: return policy.spam_threshold;
    case Category::phishing: return policy.phishing_threshold;
    case Category::malware: return policy.malware_threshold;
    case Category::impersonation: return policy.impersonation_threshold;
  }
  return policy.spam_threshold;
}

FilterAction action_for(Category category, const config::Filter& policy) {
  switch (category) {
    case Category::spam: return policy.actions.spam;
    case Category::phishing: return policy.actions.phishing;
    case Category::malware: return policy.actions.malware;
    case Category::impersonation: return policy.actions.impersonation;
  }
  return policy.on_failure;
}

// Names a category in a reply: plain words an end user understands.
std::string_view reply_word(Category category) {
  switch (category) {
    case Category::spam: return "spam";
    case Category::phishing: return "phishing";
    case Category::malware: return "malware or a blocked attachment type";
    case Category::impersonation: return "impersonation";
  }
  return "policy";
}

// Keeps only characters that are safe in a header field and a log line.
std::string clean(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  return out;
}

void append_bounded(std::string& list, std::string_view item) {
  if (list.size() >= kMaxListed) return;
  if (!list.empty()) list += ',';
  list += item;
  if (list.size() >= kMaxListed) list += ",...";
}

constexpr std::array<Category, 4> kCategories{Category::spam, Category::phishing, Category::malware,
                                             Category::impersonation};

}  // namespace

Verdict decide(const Findings& findings, const config::Filter& policy) {
  Verdict verdict;
  for (const Finding& finding : findings.findings) {
    verdict.scores[static_cast<std::size_t>(finding.category)] += finding.score;
    append_bounded(verdict.rules, clean(finding.rule) + "=" + format_score(finding.score));
  }
  for (const CheckFailure& failure : findings.failures)
    append_bounded(verdict.failures, clean(failure.check + ": " + failure.reason));

  // The most severe action wins; among categories with the same action the
  // first in enum order names the reply.
  std::optional<Category> reason_category;
  for (const Category category : kCategories) {
    const auto i = static_cast<std::size_t>(category);
    if (verdict.scores[i] < threshold(category, policy)) continue;
    verdict.triggered[i] = true;
    const FilterAction action = action_for(category, policy);
    if (!reason_category || action > verdict.action) {
      verdict.action = action;
      reason_category = category;
    }
  }
  verdict.failed = !findings.failures.empty();
  if (verdict.failed && policy.on_failure > verdict.action) {
    verdict.action = policy.on_failure;
    reason_category.reset();
  }
  if (verdict.action == FilterAction::reject) {
    verdict.reason = reason_category ? "Message refused as " + std::string(reply_word(*reason_category))
                                     : "Message refused by content policy";
  } else if (verdict.action == FilterAction::tempfail) {
    verdict.reason = reason_category
                         ? "Message deferred as possible " + std::string(reply_word(*reason_category))
                         : "Message could not be scanned; try again later";
  }
  return verdict;
}

std::string describe(const Verdict& verdict, const config::Filter& policy) {
  std::string line = "action=" + std::string(config::to_string(verdict.action));
  for (const Category category : kCategories) {
    line += " " + std::string(to_string(category)) + "=" + format_score(verdict.score(category)) + "/" +
            format_score(threshold(category, policy));
  }
  line += " rules=" + (verdict.rules.empty() ? std::string("-") : verdict.rules);
  if (verdict.failed) line += " failed=\"" + verdict.failures + "\"";
  return line;
}

std::string verdict_headers(const Verdict& verdict, const config::Filter& policy) {
  std::string out = "X-mxgate-Verdict: " + std::string(config::to_string(verdict.action));
  for (const Category category : kCategories) {
    out += ";\r\n\t" + std::string(to_string(category)) + "=" + format_score(verdict.score(category));
  }
  if (!verdict.rules.empty()) out += ";\r\n\trules=" + verdict.rules;
  out += "\r\n";
  const bool spam = verdict.is(Category::spam);
  out += "X-Spam-Flag: " + std::string(spam ? "YES" : "NO") + "\r\n";
  out += "X-Spam-Score: " + format_score(verdict.score(Category::spam)) + "\r\n";
  out += "X-Spam-Status: " + std::string(spam ? "Yes" : "No") + ", score=" +
         format_score(verdict.score(Category::spam)) + " required=" + format_score(policy.spam_threshold) + "\r\n";
  return out;
}

}  // namespace mxgate::filter
