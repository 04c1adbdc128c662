#include "delivery/destination.hpp"

#include <algorithm>

namespace mxgate::delivery {
namespace {

dns::Security weaker(dns::Security a, dns::Security b) {
  auto rank = [](dns::Security s) { return s == dns::Security::secure ? 2 : s == dns::Security::insecure ? 1 : 0; };
  return rank(a) < rank(b) ? a : b;
}

std::string dns_problem(std::string_view what, const std::string& name, dns::Security security,
                        const std::string& reason) {
  std::string text(what);
  text += " for ";
  text += name;
  text += security == dns::Security::bogus ? ": bogus DNSSEC" : ": lookup failed";
  if (!reason.empty()) text += " (" + reason + ")";
  return text;
}

asio::awaitable<Candidate> candidate_for(dns::Resolver& resolver, std::string host, std::uint16_t port,
                                         dns::Security mx_security) {
  Candidate candidate;
  candidate.host = host;
  candidate.port = port;
  asio::error_code ec;
  const auto literal = asio::ip::make_address(host, ec);
  if (!ec) {
    candidate.addresses.push_back(literal);
    candidate.security = dns::Security::insecure;  // no DNS, so no DANE
    co_return candidate;
  }
  auto answer = co_await resolver.addresses(host);
  candidate.security = weaker(mx_security, answer.security);
  if (answer.status == dns::Status::ok && answer.security != dns::Security::bogus) {
    candidate.addresses = std::move(answer.records);
  } else if (answer.status == dns::Status::nxdomain || answer.status == dns::Status::nodata) {
    candidate.error = "host " + host + " has no address";
  } else {
    candidate.error = dns_problem("address lookup", host, answer.security, answer.reason);
  }
  if (candidate.addresses.empty() && candidate.error.empty()) candidate.error = "host " + host + " has no address";
  co_return candidate;
}

asio::awaitable<Destination> mx_destination(dns::Resolver& resolver, std::string domain, std::uint16_t port,
                                            std::mt19937& rng) {
  Destination destination;
  auto mx = co_await resolver.mx(domain);
  if (mx.security == dns::Security::bogus || mx.status == dns::Status::failure) {
    destination.outcome = Destination::Outcome::defer;
    destination.reason = "4.4.3 " + dns_problem("MX lookup", domain, mx.security, mx.reason);
    co_return destination;
  }
  if (mx.status == dns::Status::nxdomain) {
    destination.outcome = Destination::Outcome::bounce;
    destination.reason = "5.1.2 domain " + domain + " does not exist";
    co_return destination;
  }
  if (mx.status == dns::Status::nodata || mx.records.empty()) {
    // RFC 5321 section 5.1: no MX, so the domain itself is the implicit MX.
    destination.candidates.push_back(co_await candidate_for(resolver, domain, port, mx.security));
    co_return destination;
  }
  auto& records = mx.records;
  const bool null_mx = std::all_of(records.begin(), records.end(), [](const dns::MxRecord& r) { return r.host.empty(); });
  if (null_mx) {
    destination.outcome = Destination::Outcome::bounce;
    destination.reason = "5.1.10 domain " + domain + " does not accept mail (null MX, RFC 7505)";
    co_return destination;
  }
  std::shuffle(records.begin(), records.end(), rng);  // equal preferences in random order
  std::stable_sort(records.begin(), records.end(),
                   [](const dns::MxRecord& a, const dns::MxRecord& b) { return a.preference < b.preference; });
  for (const auto& record : records) {
    if (record.host.empty()) continue;
    destination.candidates.push_back(co_await candidate_for(resolver, record.host, port, mx.security));
  }
  co_return destination;
}

}  // namespace

asio::awaitable<Destination> resolve_destination(dns::Resolver& resolver, const config::Route* route,
                                                 std::string domain, std::uint16_t mx_port, std::mt19937& rng) {
  if (route == nullptr || route->kind == config::Route::Kind::mx) {
    co_return co_await mx_destination(resolver, domain, mx_port, rng);
  }
  if (route->mx_lookup) co_return co_await mx_destination(resolver, route->host, route->port, rng);
  // smtp:[host]:port: no MX lookup; DANE applies only if the host's own
  // address records are secure (RFC 7672 section 2.2.2).
  Destination destination;
  destination.candidates.push_back(
      co_await candidate_for(resolver, route->host, route->port, dns::Security::secure));
  co_return destination;
}

}  // namespace mxgate::delivery
