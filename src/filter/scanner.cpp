#include "filter/scanner.hpp"

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>

#include "filter/attachment_policy.hpp"
#include "filter/impersonation.hpp"
#include "filter/mime_parser.hpp"
#include "filter/phishing.hpp"
#include "filter/reputation.hpp"
#include "filter/spam_rules.hpp"

namespace mxgate::filter {

Result<std::unique_ptr<Scanner>> Scanner::create(const config::Filter& policy, std::string authserv_id) {
  auto psl = sender_auth::PublicSuffixList::load();
  if (!psl) return make_error("filter: " + psl.error());
  std::unique_ptr<Scanner> scanner(new Scanner(policy, std::move(authserv_id), std::move(psl.value())));
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
  line += resolver_ != nullptr ? ", SPF/DKIM/DMARC on" : ", SPF/DKIM/DMARC off (no resolver)";
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

asio::awaitable<Findings> Scanner::scan_parts(const ParsedMessage& message) const {
  Findings findings;
  if (!clamd_) co_return findings;
  // Each decoded leaf part separately: clamd then sees what the recipient's
  // mail client will, whatever its own MIME parser makes of the message.
  // The time budget is enforced around the whole scan (examine()).
  ClamdScanOptions options;
  options.max_stream = policy_.clamd_max_stream;
  options.timeout = policy_.time_budget;
  for (const Part& part : message.parts) {
    if (part.data.empty()) continue;
    const auto result = co_await clamd_scan(*clamd_, part.data, options);
    if (!result) {
      findings.fail("clamd", result.error());
      break;
    }
    if (result->infected) {
      findings.add(
          Category::malware, "CLAMAV", policy_.malware_threshold,
          (part.filename.empty() ? std::string("(unnamed)") : part.filename) + ": " + result->signature);
      break;
    }
  }
  co_return findings;
}

asio::awaitable<Examination> Scanner::examine(std::string_view content, const ScanContext& context) const {
  using namespace asio::experimental::awaitable_operators;
  Examination out;
  const ParsedMessage message = parse(content);
  out.findings = local_checks(content, message);

  auto remote =
      [&]() -> asio::awaitable<std::pair<Findings, std::optional<sender_auth::AuthenticationResults>>> {
    auto sender = [&]() -> asio::awaitable<SenderCheck> {
      if (resolver_ == nullptr) co_return SenderCheck{};
      co_return co_await check_sender(*resolver_, psl_, content, message, context, policy_.protected_domains);
    };
    auto reputation = [&]() -> asio::awaitable<Findings> {
      if (resolver_ == nullptr || (policy_.dnsbl.empty() && policy_.uribl.empty())) co_return Findings{};
      ReputationPolicy lists{policy_.dnsbl, policy_.uribl, policy_.dnsbl_score, policy_.uribl_score};
      co_return co_await check_reputation(*resolver_, psl_, message, context, lists);
    };
    auto [antivirus, authentication, listed] = co_await (scan_parts(message) && sender() && reputation());
    antivirus.merge(std::move(authentication.findings));
    antivirus.merge(std::move(listed));
    co_return std::make_pair(std::move(antivirus), std::move(authentication.results));
  };
  asio::steady_timer budget(co_await asio::this_coro::executor, policy_.time_budget);
  auto result = co_await (remote() || budget.async_wait(asio::use_awaitable));
  if (result.index() == 0) {
    auto& [findings, authentication] = std::get<0>(result);
    out.findings.merge(std::move(findings));
    out.authentication = std::move(authentication);
  } else {
    out.findings.fail("filter", "time budget of " + std::to_string(policy_.time_budget.count()) + " s spent");
  }
  co_return out;
}

asio::awaitable<ScanOutcome> Scanner::scan(std::string_view content, const ScanContext& context) const {
  Examination examination = co_await examine(content, context);
  ScanOutcome outcome;
  outcome.verdict = decide(examination.findings, policy_);
  if (examination.authentication)
    outcome.header_fields =
        sender_auth::authentication_results_field(authserv_id_, *examination.authentication);
  outcome.header_fields += verdict_headers(outcome.verdict, policy_);
  co_return outcome;
}

}  // namespace mxgate::filter
