#include "smtp/relay_policy.hpp"

#include <arpa/inet.h>
#include <strings.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace mxgate::smtp {
namespace {

bool parse_ip(std::string_view text, bool& v6, std::array<std::uint8_t, 16>& bytes) {
  const std::string host(text);
  v6 = host.find(':') != std::string::npos;
  bytes.fill(0);
  return ::inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), bytes.data()) == 1;
}

// ::ffff:a.b.c.d is the IPv4 client a.b.c.d on a dual-stack socket.
void unmap_v4(bool& v6, std::array<std::uint8_t, 16>& bytes) {
  static constexpr std::uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (v6 && std::memcmp(bytes.data(), kPrefix, 12) == 0) {
    std::memmove(bytes.data(), bytes.data() + 12, 4);
    std::fill(bytes.begin() + 4, bytes.end(), 0);
    v6 = false;
  }
}

}  // namespace

Result<RelayPolicy> RelayPolicy::from_config(const config::Config& config) {
  RelayPolicy policy;
  policy.domains_ = config.accept_domains;
  for (const auto& route : config.routes)
    if (route.domain != "*") policy.domains_.push_back(route.domain);
  for (const auto& text : config.relay_networks) {
    Network network;
    const auto slash = text.find('/');
    if (!parse_ip(std::string_view(text).substr(0, slash), network.v6, network.bytes))
      return make_error("relay_networks: \"" + text + "\" is not an address or network");
    network.prefix = network.v6 ? 128 : 32;
    if (slash != std::string::npos) {
      const std::string_view len = std::string_view(text).substr(slash + 1);
      std::from_chars(len.data(), len.data() + len.size(), network.prefix);
    }
    policy.networks_.push_back(network);
  }
  return policy;
}

bool RelayPolicy::client_may_relay(std::string_view client_ip) const {
  bool v6 = false;
  std::array<std::uint8_t, 16> bytes{};
  if (!parse_ip(client_ip, v6, bytes)) return false;
  unmap_v4(v6, bytes);
  for (const Network& network : networks_) {
    if (network.v6 != v6) continue;
    const unsigned full = network.prefix / 8;
    const unsigned rest = network.prefix % 8;
    if (std::memcmp(bytes.data(), network.bytes.data(), full) != 0) continue;
    if (rest != 0) {
      const std::uint8_t mask = static_cast<std::uint8_t>(0xff << (8 - rest));
      if ((bytes[full] & mask) != (network.bytes[full] & mask)) continue;
    }
    return true;
  }
  return false;
}

bool RelayPolicy::accepts_domain(std::string_view domain) const {
  return std::any_of(domains_.begin(), domains_.end(), [&](const std::string& ours) {
    return ours.size() == domain.size() && strncasecmp(ours.data(), domain.data(), domain.size()) == 0;
  });
}

}  // namespace mxgate::smtp
