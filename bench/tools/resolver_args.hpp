// Command-line pieces the DNS test tools (dnsq, spfq) share: a whole-string
// number parser and the resolver options --stub ZONE=ADDR[,ADDR...], --ta,
// --ta-file and --timeout-ms (unbound's stub zones and trust anchors, for
// the nsd/unbound test beds).
#pragma once

#include <charconv>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "dns/resolver.hpp"

namespace mxgate::bench {

// text as a whole decimal number, or nullopt.
inline std::optional<unsigned long> parse_number(std::string_view text) {
  unsigned long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Applies one resolver option to options.  nullopt: arg is not a resolver
// option; "": applied; otherwise the usage error to print.
inline std::optional<std::string> apply_resolver_arg(std::string_view arg, std::string_view value,
                                                     dns::ResolverOptions& options) {
  if (arg == "--stub") {
    const auto eq = value.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == value.size())
      return std::string("--stub wants ZONE=ADDR[,ADDR...]");
    dns::StubZone zone{std::string(value.substr(0, eq)), {}};
    std::string_view rest = value.substr(eq + 1);
    for (;;) {
      const auto comma = rest.find(',');
      zone.addresses.emplace_back(rest.substr(0, comma));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    options.stub_zones.push_back(std::move(zone));
    return std::string();
  }
  if (arg == "--ta") {
    options.trust_anchors.emplace_back(value);
    return std::string();
  }
  if (arg == "--ta-file") {
    options.trust_anchor_files.emplace_back(std::string(value));
    return std::string();
  }
  if (arg == "--timeout-ms") {
    const auto ms = parse_number(value);
    if (!ms || *ms == 0) return std::string("--timeout-ms wants a positive number");
    options.query_timeout = std::chrono::milliseconds(*ms);
    return std::string();
  }
  return std::nullopt;
}

}  // namespace mxgate::bench
