#include "filter/report.hpp"

#include <cstdio>

#include "queue/queue_admin.hpp"
#include "sender_auth/authentication_results.hpp"

namespace mxgate::filter {
namespace {

std::string number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2f", value);
  return buffer;
}

}  // namespace

asio::awaitable<std::string> report(const Scanner& scanner, std::string_view content,
                                    const ScanContext& context, bool json) {
  const Examination examination = co_await scanner.examine(content, context);
  const Findings& findings = examination.findings;
  const std::string authentication =
      examination.authentication
          ? sender_auth::authentication_results_field(scanner.authserv_id(), *examination.authentication)
          : std::string();
  const Verdict verdict = decide(findings, scanner.policy());
  using queue::json_string;
  using queue::printable;
  constexpr Category kAll[] = {Category::spam, Category::phishing, Category::malware, Category::impersonation};
  std::string out;
  if (json) {
    out = "{\"action\": " + json_string(config::to_string(verdict.action)) + ", \"scores\": {";
    for (std::size_t i = 0; i < 4; ++i)
      out += (i ? ", " : "") + json_string(to_string(kAll[i])) + ": " + number(verdict.score(kAll[i]));
    out += "}, \"triggered\": [";
    bool first = true;
    for (const Category c : kAll) {
      if (!verdict.is(c)) continue;
      out += (first ? "" : ", ") + json_string(to_string(c));
      first = false;
    }
    out += "], \"findings\": [";
    for (std::size_t i = 0; i < findings.findings.size(); ++i) {
      const Finding& f = findings.findings[i];
      out += (i ? ", " : "") + std::string("{\"category\": ") + json_string(to_string(f.category)) +
             ", \"rule\": " + json_string(f.rule) + ", \"score\": " + number(f.score) +
             ", \"detail\": " + json_string(f.detail) + "}";
    }
    out += "], \"failures\": [";
    for (std::size_t i = 0; i < findings.failures.size(); ++i) {
      const CheckFailure& f = findings.failures[i];
      out += (i ? ", " : "") + std::string("{\"check\": ") + json_string(f.check) +
             ", \"reason\": " + json_string(f.reason) + "}";
    }
    out += "], \"authentication_results\": " +
           (authentication.empty() ? std::string("null") : json_string(authentication));
    out += "}\n";
    co_return out;
  }
  out = "verdict: " + describe(verdict, scanner.policy()) + "\n";
  for (const Finding& f : findings.findings)
    out += "  " + std::string(to_string(f.category)) + " " + printable(f.rule) + " " + number(f.score) + "  " +
           printable(f.detail) + "\n";
  for (const CheckFailure& f : findings.failures)
    out += "  failed " + printable(f.check) + ": " + printable(f.reason) + "\n";
  for (std::size_t pos = 0; pos < authentication.size();) {
    const auto eol = authentication.find("\r\n", pos);
    out += "  " + printable(authentication.substr(pos, eol - pos)) + "\n";
    pos = eol == std::string::npos ? authentication.size() : eol + 2;
  }
  co_return out;
}

}  // namespace mxgate::filter
