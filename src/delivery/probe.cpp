#include "delivery/probe.hpp"

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <algorithm>
#include <cctype>
#include <exception>
#include <random>

#include "delivery/destination.hpp"
#include "delivery/tls_policy.hpp"
#include "dns/resolver_options.hpp"
#include "queue/queue_admin.hpp"

namespace mxgate::delivery {
namespace {

using Mode = TlsRequirement::Mode;

std::string_view status_text(dns::Status status) {
  switch (status) {
    case dns::Status::ok:
      return "ok";
    case dns::Status::nxdomain:
      return "nxdomain";
    case dns::Status::nodata:
      return "nodata";
    case dns::Status::failure:
      break;
  }
  return "failure";
}

std::string_view mode_text(Mode mode) {
  switch (mode) {
    case Mode::cleartext:
      return "cleartext";
    case Mode::opportunistic:
      return "opportunistic";
    case Mode::encrypt:
      return "encrypt";
    case Mode::verify:
      return "verify";
    case Mode::dane:
      break;
  }
  return "dane";
}

std::string tlsa_text(const dns::TlsaRecord& r) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text = std::to_string(r.usage) + " " + std::to_string(r.selector) + " " +
                     std::to_string(r.matching_type) + " ";
  for (const std::uint8_t b : r.data) {
    text += kHex[b >> 4];
    text += kHex[b & 0xf];
  }
  return text;
}

ClientSettings probe_settings(const config::Config& config) {
  ClientSettings settings;
  settings.helo_name = config.hostname;
  settings.connect_timeout = std::chrono::seconds(10);
  settings.greeting_timeout = std::chrono::seconds(30);
  settings.command_timeout = std::chrono::seconds(30);
  settings.tls_handshake_timeout = std::chrono::seconds(30);
  return settings;
}

asio::awaitable<void> probe_host(dns::Resolver& resolver, const ClientSettings& settings, TlsLevel level,
                                 const Candidate& candidate, ProbeHost& host) {
  host.host = candidate.host;
  host.port = candidate.port;
  host.security = std::string(dns::to_string(candidate.security));
  for (const auto& address : candidate.addresses) host.addresses.push_back(address.to_string());
  host.error = candidate.error;
  if (candidate.addresses.empty()) co_return;

  std::optional<dns::Answer<dns::TlsaRecord>> tlsa;
  if (candidate.security == dns::Security::secure) {
    const std::uint16_t port = candidate.port;
    const std::string name = candidate.host;
    tlsa = co_await resolver.tlsa(port, name);
    host.tlsa_looked_up = true;
    host.tlsa_status = std::string(status_text(tlsa->status));
    host.tlsa_security = std::string(dns::to_string(tlsa->security));
    host.tlsa_reason = tlsa->reason;
    for (const auto& r : tlsa->records) host.tlsa.push_back(tlsa_text(r));
  }
  const TlsDecision decision = decide_tls(level, candidate.security, candidate.host, tlsa ? &*tlsa : nullptr);
  TlsRequirement requirement = decision.requirement;
  if (decision.defer) {
    host.tls_requirement = "defer";
    host.tls_defer_reason = decision.reason;
  } else {
    host.tls_requirement = std::string(mode_text(requirement.mode));
  }
  // For the report the connection always tries TLS: a deferred or
  // cleartext destination is probed as opportunistic.
  if (decision.defer || requirement.mode == Mode::cleartext) {
    requirement.mode = Mode::opportunistic;
    requirement.tlsa.clear();
  }
  if (requirement.host.empty()) requirement.host = candidate.host;
  host.probed_with = std::string(mode_text(requirement.mode));
  host.probed_address = candidate.addresses.front().to_string();
  const asio::ip::tcp::endpoint endpoint(candidate.addresses.front(), candidate.port);
  ProbeResult result = co_await probe_smtp(endpoint, settings, requirement);
  host.connection = std::move(result);
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  while (!text.empty() && text.back() == '.') text.pop_back();
  return text;
}

// ---------------------------------------------------------------- output

std::string js(std::string_view text) { return queue::json_string(text); }
std::string jb(bool value) { return value ? "true" : "false"; }

std::string js_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + js(items[i]);
  return out + "]";
}

std::string connection_json(const ProbeHost& host) {
  if (!host.connection) return "null";
  const ProbeResult& c = *host.connection;
  return "{\"address\":" + js(host.probed_address) + ",\"port\":" + std::to_string(host.port) +
         ",\"tls_mode\":" + js(host.probed_with) + ",\"connected\":" + jb(c.connected) +
         ",\"greeting\":" + js(c.greeting) + ",\"starttls\":" + jb(c.starttls_offered) + ",\"tls\":" + jb(c.tls) +
         ",\"tls_version\":" + js(c.tls_version) + ",\"cipher\":" + js(c.cipher) +
         ",\"peer_subject\":" + js(c.peer_subject) + ",\"peer_issuer\":" + js(c.peer_issuer) +
         ",\"peer_spki_sha256\":" + js(c.peer_spki_sha256) + ",\"dane_verified\":" + jb(c.dane_verified) +
         ",\"verification\":" + js(c.verification) + ",\"tls_summary\":" + js(c.tls_summary) +
         ",\"error\":" + js(c.error) + "}";
}

std::string host_json(const ProbeHost& host) {
  std::string tlsa = "null";
  if (host.tlsa_looked_up)
    tlsa = "{\"name\":" + js("_" + std::to_string(host.port) + "._tcp." + host.host) +
           ",\"status\":" + js(host.tlsa_status) + ",\"security\":" + js(host.tlsa_security) +
           ",\"reason\":" + js(host.tlsa_reason) + ",\"records\":" + js_list(host.tlsa) + "}";
  return "{\"host\":" + js(host.host) + ",\"port\":" + std::to_string(host.port) +
         ",\"security\":" + js(host.security) + ",\"addresses\":" + js_list(host.addresses) +
         ",\"error\":" + js(host.error) + ",\"tlsa\":" + tlsa + ",\"tls_requirement\":" + js(host.tls_requirement) +
         ",\"tls_defer_reason\":" + js(host.tls_defer_reason) + ",\"connection\":" + connection_json(host) + "}";
}

}  // namespace

asio::awaitable<ProbeReport> probe_domain(dns::Resolver& resolver, const config::Config& config,
                                          std::string domain) {
  ProbeReport report;
  report.domain = lower(domain);
  const config::Route* route = config::find_route(config, report.domain);
  if (route != nullptr && route->kind == config::Route::Kind::maildir) route = nullptr;  // probe the MX hosts
  const std::string level_name = route != nullptr && !route->tls.empty() ? route->tls : config.delivery.tls;
  report.tls_level = level_name;
  TlsLevel level = TlsLevel::may;
  parse_tls_level(level_name, level);
  if (route != nullptr && route->kind == config::Route::Kind::smtp) report.next_hop = route->next_hop;

  const bool smtp_route = route != nullptr && route->kind == config::Route::Kind::smtp;
  report.mx_looked_up = !smtp_route || route->mx_lookup;
  if (report.mx_looked_up) {
    report.mx_name = smtp_route ? route->host : report.domain;
    const std::string name = report.mx_name;
    auto mx = co_await resolver.mx(name);
    report.mx_status = std::string(status_text(mx.status));
    report.mx_security = std::string(dns::to_string(mx.security));
    report.mx_reason = mx.reason;
    for (const auto& r : mx.records) report.mx.push_back(std::to_string(r.preference) + " " + (r.host.empty() ? "." : r.host));
    report.null_mx = !mx.records.empty() && std::all_of(mx.records.begin(), mx.records.end(),
                                                         [](const dns::MxRecord& r) { return r.host.empty(); });
    report.implicit_mx = mx.status == dns::Status::nodata && mx.security != dns::Security::bogus;
  }

  std::mt19937 rng(std::random_device{}());
  const std::string target = report.domain;
  const std::uint16_t mx_port = config.delivery.mx_port;
  Destination destination = co_await resolve_destination(resolver, route, target, mx_port, rng);
  if (destination.outcome != Destination::Outcome::ok) {
    report.outcome = destination.reason;
    co_return report;
  }
  const ClientSettings settings = probe_settings(config);
  for (const Candidate& candidate : destination.candidates) {
    report.hosts.emplace_back();
    co_await probe_host(resolver, settings, level, candidate, report.hosts.back());
  }
  co_return report;
}

std::string probe_text(const ProbeReport& report) {
  std::string out = "domain: " + report.domain + "\nnext hop: " + report.next_hop + "\ntls level: " +
                    report.tls_level + "\n";
  if (report.mx_looked_up) {
    out += "MX " + report.mx_name + ": " + report.mx_status + ", DNSSEC " + report.mx_security;
    if (!report.mx_reason.empty()) out += " (" + report.mx_reason + ")";
    out += "\n";
    for (const auto& mx : report.mx) out += "  MX " + mx + "\n";
    if (report.null_mx) out += "  null MX (RFC 7505): the domain accepts no mail\n";
    if (report.implicit_mx) out += "  no MX records: the domain itself is the implicit MX\n";
  }
  if (!report.outcome.empty()) out += "result: " + report.outcome + "\n";
  for (const ProbeHost& host : report.hosts) {
    out += "\nhost " + host.host + " port " + std::to_string(host.port) + ": DNSSEC " + host.security + "\n";
    for (const auto& address : host.addresses) out += "  address " + address + "\n";
    if (!host.error.empty()) out += "  error: " + host.error + "\n";
    if (host.tlsa_looked_up) {
      out += "  TLSA _" + std::to_string(host.port) + "._tcp." + host.host + ": " + host.tlsa_status + ", DNSSEC " +
             host.tlsa_security;
      if (!host.tlsa_reason.empty()) out += " (" + host.tlsa_reason + ")";
      out += "\n";
      for (const auto& r : host.tlsa) out += "    TLSA " + r + "\n";
    } else if (!host.addresses.empty()) {
      out += "  TLSA: not looked up (DNS answers not secure)\n";
    }
    if (!host.tls_requirement.empty()) {
      out += "  TLS requirement: " + host.tls_requirement;
      if (!host.tls_defer_reason.empty()) out += " (" + host.tls_defer_reason + ")";
      out += "\n";
    }
    if (!host.connection) continue;
    const ProbeResult& c = *host.connection;
    out += "  connection to " + host.probed_address + " (" + host.probed_with + "):\n";
    if (!c.connected) {
      out += "    " + c.error + "\n";
      continue;
    }
    out += "    greeting: " + c.greeting + "\n";
    out += std::string("    STARTTLS: ") + (c.starttls_offered ? "offered" : "not offered") + "\n";
    if (c.tls) {
      out += "    TLS: " + c.tls_version + " " + c.cipher + "\n";
      out += "    peer subject: " + c.peer_subject + "\n    peer issuer: " + c.peer_issuer + "\n";
      out += "    peer SPKI SHA-256: " + c.peer_spki_sha256 + "\n";
    }
    out += "    verification: " + c.verification + "\n";
    out += "    session: " + c.tls_summary + "\n";
    if (!c.error.empty()) out += "    error: " + c.error + "\n";
  }
  return out;
}

std::string probe_json(const ProbeReport& report) {
  std::string out = "{\"domain\":" + js(report.domain) + ",\"next_hop\":" + js(report.next_hop) +
                    ",\"tls_level\":" + js(report.tls_level) + ",\"mx\":";
  if (report.mx_looked_up) {
    out += "{\"name\":" + js(report.mx_name) + ",\"status\":" + js(report.mx_status) +
           ",\"security\":" + js(report.mx_security) + ",\"reason\":" + js(report.mx_reason) +
           ",\"records\":" + js_list(report.mx) + ",\"null_mx\":" + jb(report.null_mx) +
           ",\"implicit_mx\":" + jb(report.implicit_mx) + "}";
  } else {
    out += "null";
  }
  out += ",\"outcome\":" + js(report.outcome) + ",\"hosts\":[";
  for (std::size_t i = 0; i < report.hosts.size(); ++i) out += (i ? "," : "") + host_json(report.hosts[i]);
  return out + "]}\n";
}

Result<ProbeReport> run_probe(const config::Config& config, std::string domain) {
  asio::io_context io(1);
  auto resolver = dns::Resolver::create(io, dns::resolver_options(config));
  if (!resolver) return make_error("dns: " + resolver.error());
  std::optional<ProbeReport> report;
  std::string failure;
  asio::co_spawn(io, probe_domain(*resolver.value(), config, std::move(domain)),
                 [&](std::exception_ptr error, ProbeReport result) {
                   if (!error) {
                     report = std::move(result);
                     return;
                   }
                   try {
                     std::rethrow_exception(error);
                   } catch (const std::exception& e) {
                     failure = e.what();
                   } catch (...) {
                     failure = "unknown error";
                   }
                 });
  io.run();
  resolver.value().reset();  // before io
  if (!report) return make_error("probe failed: " + failure);
  return std::move(*report);
}

}  // namespace mxgate::delivery
