// Who may send mail to which domains: never an open relay (RFC 5321 section
// 3.9, RFC 2505).  A recipient domain we accept mail for (accept_domains, or
// one a specific [[route]] names) is open to every client; any other domain
// only to clients inside relay_networks.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "util/result.hpp"

namespace mxgate::smtp {

class RelayPolicy {
 public:
  // Domains from config.accept_domains and every route other than "*".
  static Result<RelayPolicy> from_config(const config::Config& config);

  bool client_may_relay(std::string_view client_ip) const;
  bool accepts_domain(std::string_view domain) const;

 private:
  struct Network {
    bool v6 = false;
    std::array<std::uint8_t, 16> bytes{};
    unsigned prefix = 0;
  };
  std::vector<std::string> domains_;  // lower case
  std::vector<Network> networks_;
};

}  // namespace mxgate::smtp
