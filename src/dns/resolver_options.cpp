#include "dns/resolver_options.hpp"

#include <system_error>

#include "util/log.hpp"

namespace mxgate::dns {

ResolverOptions resolver_options(const config::Config& config) {
  ResolverOptions options;
  for (const auto& file : config.dns.trust_anchor_files) {
    std::error_code ec;
    if (std::filesystem::exists(file, ec)) {
      options.trust_anchor_files.push_back(file);
    } else {
      log_line("dns: trust anchor " + file.string() + " missing (install dns-root-data); DNSSEC is off");
    }
  }
  options.trust_anchors = config.dns.trust_anchors;
  for (const auto& zone : config.dns.stub_zones) options.stub_zones.push_back({zone.name, zone.addresses});
  return options;
}

}  // namespace mxgate::dns
