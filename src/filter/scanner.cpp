#include "filter/scanner.hpp"

#include <chrono>

#include "filter/attachment_policy.hpp"
#include "filter/impersonation.hpp"
#include "filter/mime_parser.hpp"
#include "filter/phishing.hpp"
#include "filter/spam_rules.hpp"

namespace mxgate::filter {

Result<std::unique_ptr<Scanner>> Scanner::create(const config::Filter& policy) {
  std::unique_ptr<Scanner> scanner(new Scanner(policy));
  if (!policy.clamd.empty()) {
    auto endpoint = parse_clamd_endpoint(policy.clamd);
    if (!endpoint) return make_error("filter.clamd: " + endpoint.error());
    scanner->clamd_ = std::move(endpoint.value());
  }
  return scanner;
}

std::string Scanner::describe() const {
  std::string line = "filter: enabled, ";
  line += clamd_ ? "antivirus clamd " + to_string(*clamd_) : "no antivirus (filter.clamd unset)";
  line += ", protected domains " + std::to_string(policy_.protected_domains.size()) + ", protected names " +
          std::to_string(policy_.protected_names.size());
  return line;
}

asio::awaitable<std::string> Scanner::check_clamd() const {
  if (!clamd_) co_return std::string();
  const auto pong = co_await clamd_ping(*clamd_, std::chrono::seconds(5));
  co_return pong ? std::string() : pong.error();
}

ParsedMessage Scanner::parse(std::string_view content) const {
  MimeLimits limits;
  limits.max_depth = policy_.max_mime_depth;
  limits.max_parts = policy_.max_mime_parts;
  limits.max_decoded_bytes = policy_.max_decoded_size;
  return parse_mime(content, limits);
}

Findings Scanner::local_checks(std::string_view content, const ParsedMessage& message) const {
  Findings findings = check_spam_rules(content, message);
  const ContentPolicy content_policy{policy_.protected_domains, policy_.protected_names};
  findings.merge(check_phishing(message, content_policy));
  findings.merge(check_impersonation(message, content_policy));
  AttachmentLimits limits;
  limits.max_archive_depth = policy_.max_archive_depth;
  limits.max_archive_entries = policy_.max_archive_entries;
  limits.max_expanded_bytes = policy_.max_archive_expanded;
  findings.merge(check_attachments(message, limits));
  // What could not be parsed cannot be vouched for: a message past a MIME
  // limit counts as a carrier, like an archive too deep to open.
  if (!message.limit_exceeded.empty())
    findings.add(Category::malware, "MIME_LIMIT", policy_.malware_threshold, message.limit_exceeded);
  return findings;
}

asio::awaitable<Verdict> Scanner::scan(std::string_view content) const {
  const Findings findings = co_await examine(content);
  co_return decide(findings, policy_);
}

asio::awaitable<Findings> Scanner::examine(std::string_view content) const {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + policy_.time_budget;
  const ParsedMessage message = parse(content);
  Findings findings = local_checks(content, message);

  if (clamd_) {
    // Each decoded leaf part separately: clamd then sees what the recipient's
    // mail client will, whatever its own MIME parser makes of the message.
    ClamdScanOptions options;
    options.max_stream = policy_.clamd_max_stream;
    for (const Part& part : message.parts) {
      if (part.data.empty()) continue;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        findings.fail("clamd", "time budget exhausted");
        break;
      }
      options.timeout = left;
      const auto result = co_await clamd_scan(*clamd_, part.data, options);
      if (!result) {
        findings.fail("clamd", result.error());
        break;
      }
      if (result->infected) {
        findings.add(Category::malware, "CLAMAV", policy_.malware_threshold,
                     (part.filename.empty() ? std::string("(unnamed)") : part.filename) + ": " + result->signature);
        break;
      }
    }
  }
  co_return findings;
}

}  // namespace mxgate::filter
