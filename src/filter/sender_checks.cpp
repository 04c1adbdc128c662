#include "filter/sender_checks.hpp"

#include <asio/ip/address.hpp>

#include "sender_auth/dkim.hpp"
#include "sender_auth/spf.hpp"

namespace mxgate::filter {
namespace {

using namespace sender_auth;

bool is_protected(const std::string& domain, const std::vector<std::string>& protected_domains) {
  for (const std::string& own : protected_domains) {
    if (domain == own) return true;
    if (domain.size() > own.size() && domain.compare(domain.size() - own.size(), own.size(), own) == 0 &&
        domain[domain.size() - own.size() - 1] == '.')
      return true;
  }
  return false;
}

std::string domain_of(const std::string& address) {
  const auto at = address.rfind('@');
  std::string domain = at == std::string::npos ? std::string() : address.substr(at + 1);
  for (char& c : domain) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  return domain;
}

}  // namespace

asio::awaitable<SenderCheck> check_sender(dns::Resolver& resolver, const PublicSuffixList& psl,
                                          std::string_view content, const ParsedMessage& message,
                                          const ScanContext& context,
                                          const std::vector<std::string>& protected_domains) {
  SenderCheck out;
  if (context.client_address.empty() || context.relay_client) co_return out;
  asio::error_code ec;
  const auto client = asio::ip::make_address(context.client_address, ec);
  if (ec) co_return out;

  AuthenticationResults results;
  // RFC 7208 section 2.4: the null sender is checked as postmaster@HELO.
  results.mail_from = context.sender.empty() ? "postmaster@" + context.helo : context.sender;
  const std::string spf_domain = context.sender.empty() ? context.helo : domain_of(context.sender);
  // Arguments as named values, not temporaries inside the co_await: GCC 12
  // may destroy such temporaries twice across the suspension.
  SpfVerdict spf;
  if (context.mail_from_spf) {
    spf = co_await context.mail_from_spf->get();  // started when MAIL was accepted
  } else {
    std::string helo = context.helo, sender = context.sender;
    auto spf_check = check_spf_mail_from(resolver, client, std::move(helo), std::move(sender));
    spf = co_await std::move(spf_check);
  }
  results.spf = spf;
  if (spf.result == SpfResult::fail) out.findings.add(Category::spam, "SPF_FAIL", 1.0, spf.reason);
  if (spf.result == SpfResult::softfail) out.findings.add(Category::spam, "SPF_SOFTFAIL", 0.7, spf.reason);
  if (spf.result == SpfResult::temperror) out.findings.fail("spf", spf.reason);

  results.dkim = co_await verify_dkim(content, resolver, DkimLimits{});
  bool invalid = false, valid = false;
  for (const DkimVerdict& dkim : results.dkim) {
    if (dkim.result == DkimResult::pass) valid = true;
    // RFC 6376 section 3.6.1: a failure under a key in testing mode (t=y)
    // counts like an unsigned message.
    if ((dkim.result == DkimResult::fail || dkim.result == DkimResult::permerror) && !dkim.testing) invalid = true;
    if (dkim.result == DkimResult::temperror) out.findings.fail("dkim", dkim.domain + ": " + dkim.reason);
  }
  if (valid) out.findings.add(Category::spam, "DKIM_VALID", -0.1);
  if (invalid) out.findings.add(Category::spam, "DKIM_INVALID", 0.1);

  if (message.from && !message.from->domain.empty()) {
    auto dmarc_check = check_dmarc(resolver, psl, message.from->domain, spf.result, spf_domain, results.dkim);
    const DmarcVerdict dmarc = co_await std::move(dmarc_check);
    results.dmarc = dmarc;
    if (dmarc.result == DmarcResult::temperror) out.findings.fail("dmarc", dmarc.reason);
    if (dmarc.result == DmarcResult::fail) {
      const std::string detail = "From " + dmarc.from_domain + ": " + dmarc.reason;
      switch (dmarc.policy) {
        case DmarcPolicy::reject:
          out.findings.add(Category::phishing, "DMARC_POLICY_REJECT", 1.0, detail);
          break;
        case DmarcPolicy::quarantine:
          out.findings.add(Category::spam, "DMARC_POLICY_QUARANTINE", 3.0, detail);
          break;
        case DmarcPolicy::none:
          out.findings.add(Category::spam, "DMARC_POLICY_NONE", 0.1, detail);
          break;
      }
      if (is_protected(dmarc.from_domain, protected_domains))
        out.findings.add(Category::impersonation, "DMARC_FAIL_OWN_DOMAIN", 1.0, detail);
    }
  }
  out.results = std::move(results);
  co_return out;
}

}  // namespace mxgate::filter
