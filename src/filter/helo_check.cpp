#include "filter/helo_check.hpp"

#include <asio/ip/address.hpp>

namespace mxgate::filter {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool equal_ci(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// RFC 1035 section 2.3.1 host name syntax (letters, digits, hyphens; no
// hyphen at a label's ends; labels of 1 to 63, the whole at most 253), at
// least two labels, the last one starting with a letter so that a dotted
// quad is not a name.
bool is_fqdn(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t labels = 0;
  std::string_view last;
  while (!name.empty()) {
    const auto dot = name.find('.');
    const std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (const char c : label)
      if (!is_letter(c) && !is_digit(c) && c != '-') return false;
    ++labels;
    last = label;
    if (dot == std::string_view::npos) break;
    name.remove_prefix(dot + 1);
    if (name.empty()) return false;  // an empty last label: "a.b." after the one final dot was taken off
  }
  return labels >= 2 && is_letter(last.front());
}

}  // namespace

std::string helo_problem(std::string_view helo, std::string_view client_ip, std::string_view our_hostname) {
  if (!helo.empty() && helo.front() == '[') {
    if (helo.size() < 3 || helo.back() != ']') return "invalid address literal";
    std::string_view literal = helo.substr(1, helo.size() - 2);
    // RFC 5321 section 4.1.3: "IPv6:" tags an IPv6 literal.
    const bool v6 = literal.size() > 5 && equal_ci(literal.substr(0, 5), "IPv6:");
    if (v6) literal.remove_prefix(5);
    asio::error_code ec;
    const auto address = asio::ip::make_address(std::string(literal), ec);
    if (ec || address.is_v6() != v6) return "invalid address literal";
    const auto client = asio::ip::make_address(std::string(client_ip), ec);
    if (ec) return "address literal is not the client's address";
    if (address != client) return "address literal is not the client's address";
    return {};
  }
  std::string_view name = helo;
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (!is_fqdn(name)) return "need fully-qualified hostname";
  std::string_view ours = our_hostname;
  if (!ours.empty() && ours.back() == '.') ours.remove_suffix(1);
  if (!ours.empty() && equal_ci(name, ours)) return "that is our own hostname";
  return {};
}

}  // namespace mxgate::filter
