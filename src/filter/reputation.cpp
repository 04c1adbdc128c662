#include "filter/reputation.hpp"

#include <algorithm>

#include "filter/html_links.hpp"
#include "filter/url.hpp"

namespace mxgate::filter {
namespace {

// 127.0.0.0/8 lists; 127.255.255.0/24 is a refusal code (Spamhaus: public
// resolver, over quota), never a listing.
std::optional<std::string> listing(const dns::Answer<asio::ip::address>& answer) {
  if (answer.status != dns::Status::ok) return std::nullopt;
  for (const auto& address : answer.records) {
    if (!address.is_v4()) continue;
    const auto bytes = address.to_v4().to_bytes();
    if (bytes[0] != 127) continue;
    if (bytes[1] == 255 && bytes[2] == 255) continue;
    return address.to_string();
  }
  return std::nullopt;
}

}  // namespace

std::string blocklist_name(const asio::ip::address& address, std::string_view zone) {
  std::string name;
  if (address.is_v4()) {
    const auto b = address.to_v4().to_bytes();
    for (int i = 3; i >= 0; --i) name += std::to_string(b[static_cast<std::size_t>(i)]) + ".";
  } else {
    constexpr char kHex[] = "0123456789abcdef";
    const auto b = address.to_v6().to_bytes();
    for (int i = 15; i >= 0; --i) {
      name += kHex[b[static_cast<std::size_t>(i)] & 15];
      name += '.';
      name += kHex[b[static_cast<std::size_t>(i)] >> 4];
      name += '.';
    }
  }
  return name + std::string(zone);
}

std::vector<std::string> url_domains(const ParsedMessage& message, const sender_auth::PublicSuffixList& psl,
                                     std::size_t max) {
  std::vector<std::string> urls = find_urls(message.text).urls;
  if (!message.html.empty()) {
    for (const auto& link : message.html_body.links) urls.push_back(link.href);
    for (auto& url : find_urls(message.html).urls) urls.push_back(std::move(url));
  }
  std::vector<std::string> out;
  for (const std::string& url : urls) {
    if (out.size() >= max) break;
    const auto parsed = parse_url(url);
    if (!parsed || parsed->host.empty()) continue;
    std::string domain = parsed->ip_literal ? parsed->host : psl.organizational_domain(parsed->host);
    if (domain.empty() || std::find(out.begin(), out.end(), domain) != out.end()) continue;
    out.push_back(std::move(domain));
  }
  return out;
}

asio::awaitable<Findings> check_client_dnsbl(dns::Resolver& resolver, const std::string& client_address,
                                             bool relay_client, const ReputationPolicy& policy) {
  Findings findings;
  if (relay_client) co_return findings;
  asio::error_code ec;
  const auto client = asio::ip::make_address(client_address, ec);
  if (ec) co_return findings;
  for (const std::string& zone : policy.dnsbl) {
    const std::string name = blocklist_name(client, zone);  // named: see dns/resolver.cpp on GCC 12
    const dns::Answer<asio::ip::address> answer = co_await resolver.addresses(name);
    const auto listed = listing(answer);
    if (listed) {
      findings.add(Category::spam, "RCVD_IN_DNSBL", policy.dnsbl_score,
                   client_address + " listed in " + zone + " (" + *listed + ")");
      break;
    }
  }
  co_return findings;
}

asio::awaitable<Findings> check_uribl(dns::Resolver& resolver, const sender_auth::PublicSuffixList& psl,
                                      const ParsedMessage& message, bool relay_client,
                                      const ReputationPolicy& policy) {
  Findings findings;
  if (relay_client || policy.uribl.empty()) co_return findings;
  asio::error_code ec;
  for (const std::string& domain : url_domains(message, psl, policy.max_uribl_domains)) {
    const auto address = asio::ip::make_address(domain, ec);
    for (const std::string& zone : policy.uribl) {
      const std::string name = ec ? domain + "." + zone : blocklist_name(address, zone);
      const dns::Answer<asio::ip::address> answer = co_await resolver.addresses(name);
      const auto listed = listing(answer);
      if (listed) {
        findings.add(Category::spam, "URIBL_LISTED", policy.uribl_score,
                     domain + " listed in " + zone + " (" + *listed + ")");
        co_return findings;
      }
    }
  }
  co_return findings;
}

asio::awaitable<Findings> check_reputation(dns::Resolver& resolver, const sender_auth::PublicSuffixList& psl,
                                           const ParsedMessage& message, const ScanContext& context,
                                           const ReputationPolicy& policy) {
  Findings findings = co_await check_client_dnsbl(resolver, context.client_address, context.relay_client, policy);
  findings.merge(co_await check_uribl(resolver, psl, message, context.relay_client, policy));
  co_return findings;
}

}  // namespace mxgate::filter
