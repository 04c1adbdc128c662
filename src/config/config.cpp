// Configuration parsing.  The TOML document is walked table by table against
// a fixed list of keys; the first problem found becomes the one-line error
// "KEY: what is wrong" and the whole file is refused.  toml++ reports syntax
// errors by exception (the Debian build enables them); that exception is
// caught here, at start-up, and never reaches the data path.
#include "config/config.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <optional>
#include <system_error>

#include "util/unique_fd.hpp"

namespace mxgate::config {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kMaxTimeoutSeconds = 86400;  // keeps deadline arithmetic far from overflow

// Renders a key or value for an error line: control characters escaped so
// the error stays one line, long text shortened.
std::string printable(std::string_view text) {
  constexpr std::size_t kMax = 120;
  std::string out;
  for (const char c : text.substr(0, kMax)) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      constexpr char hex[] = "0123456789ABCDEF";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  if (text.size() > kMax) out += "...";
  return out;
}

std::string quote(std::string_view text) { return "\"" + printable(text) + "\""; }

// A key as TOML would write it: bare when it can be, quoted otherwise.
std::string key_name(std::string_view key) {
  const bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
  return bare ? std::string(key) : quote(key);
}

std::string join(const std::string& prefix, std::string_view name) {
  return prefix.empty() ? key_name(name) : prefix + "." + key_name(name);
}

std::string indexed(const std::string& prefix, std::size_t index) {
  return prefix + "[" + std::to_string(index) + "]";
}

// RFC 1035 host name syntax (letters, digits, hyphens; labels of 1-63
// octets; at most 253 in all), with a non-numeric last label so an IP
// address is not mistaken for a name.
bool looks_like_domain(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::string_view last;
  while (true) {
    const auto dot = name.find('.');
    const std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    const bool ok = std::all_of(label.begin(), label.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    });
    if (!ok) return false;
    last = label;
    if (dot == std::string_view::npos) break;
    name.remove_prefix(dot + 1);
  }
  return !std::all_of(last.begin(), last.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Splits "IPv4:port" or "[IPv6]:port" into listener.host/port; returns the
// problem, or nothing when the address is good.
std::optional<std::string> parse_address(std::string_view text, Listener& listener) {
  const std::string expected = " (expected \"IPv4:port\" or \"[IPv6]:port\")";
  std::string_view host;
  std::string_view port;
  int family = AF_INET;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return quote(text) + " is not an address" + expected;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    family = AF_INET6;
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return quote(text) + " has no port" + expected;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return quote(text) + ": an IPv6 address must be in brackets" + expected;
    }
  }

  const std::string host_text(host);
  unsigned char buffer[sizeof(in6_addr)];
  if (::inet_pton(family, host_text.c_str(), buffer) != 1) {
    return quote(host) + " is not an IP" + (family == AF_INET6 ? "v6" : "v4") + " address literal" + expected;
  }

  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || port.front() == '+' || ec != std::errc() || end != port.data() + port.size() ||
      value < 1 || value > 65535) {
    return "port " + quote(port) + " is not a number from 1 to 65535";
  }
  listener.address = std::string(text);
  listener.host = host_text;
  listener.port = static_cast<std::uint16_t>(value);
  return std::nullopt;
}

std::optional<TlsMode> parse_tls_mode(std::string_view text) {
  for (const TlsMode mode : {TlsMode::none, TlsMode::may, TlsMode::encrypt, TlsMode::implicit}) {
    if (text == to_string(mode)) return mode;
  }
  return std::nullopt;
}

// Why path cannot be read, or nothing when it can.  Opening is the only
// honest test of readability (access(2) answers for the real uid, and root
// passes permission checks anyway).
std::optional<std::string> unreadable(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) return errno_text(errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_text(errno);
  if (!S_ISREG(st.st_mode)) return std::string("not a regular file");
  return std::nullopt;
}

enum class Need { optional, required };

// Walks the document, remembering only the first error: once one is set,
// later reads are harmless no-ops and parse() returns that error.
class Reader {
 public:
  explicit Reader(fs::path base_dir) : base_dir_(std::move(base_dir)) {}

  bool failed() const { return error_.has_value(); }
  const std::string& error() const { return *error_; }

  void fail(const std::string& key, std::string_view what) {
    if (!error_) error_ = key + ": " + std::string(what);
  }

  void check_keys(const toml::table& table, const std::string& prefix,
                  std::initializer_list<std::string_view> known) {
    for (const auto& [key, node] : table) {
      if (std::find(known.begin(), known.end(), key.str()) == known.end()) {
        fail(join(prefix, key.str()), "unknown key");
      }
    }
  }

  // The node at prefix.name, or null when absent (an error if required).
  const toml::node* find(const toml::table& table, const std::string& prefix, std::string_view name,
                         Need need) {
    const toml::node* node = table.get(name);
    if (node == nullptr && need == Need::required) fail(join(prefix, name), "missing required key");
    return failed() ? nullptr : node;
  }

  // A sub-table; absent is fine (its keys keep their defaults).
  const toml::table* table(const toml::table& parent, const std::string& prefix, std::string_view name,
                           Need need = Need::optional) {
    const toml::node* node = find(parent, prefix, name, need);
    if (node == nullptr) return nullptr;
    if (!node->is_table()) {
      fail(join(prefix, name), "expected a table");
      return nullptr;
    }
    return node->as_table();
  }

  bool string(const toml::table& table, const std::string& prefix, std::string_view name, std::string& out,
              Need need = Need::optional) {
    const toml::node* node = find(table, prefix, name, need);
    if (node == nullptr) return false;
    if (!node->is_string()) {
      fail(join(prefix, name), "expected a string");
      return false;
    }
    out = node->as_string()->get();
    return true;
  }

  // A non-empty string naming a file or directory; relative to the config file's directory.
  bool path(const toml::table& table, const std::string& prefix, std::string_view name, fs::path& out,
            Need need = Need::optional) {
    std::string text;
    if (!string(table, prefix, name, text, need)) return false;
    if (text.empty()) {
      fail(join(prefix, name), "must not be empty");
      return false;
    }
    fs::path p(text);
    out = (p.is_relative() ? base_dir_ / p : p).lexically_normal();
    return true;
  }

  template <class Int>
  bool integer(const toml::table& table, const std::string& prefix, std::string_view name, Int& out,
               std::int64_t min, std::int64_t max) {
    const toml::node* node = find(table, prefix, name, Need::optional);
    if (node == nullptr) return false;
    if (!node->is_integer()) {
      fail(join(prefix, name), "expected an integer");
      return false;
    }
    const std::int64_t value = node->as_integer()->get();
    if (value < min || value > max) {
      fail(join(prefix, name),
           max == std::numeric_limits<std::int64_t>::max()
               ? "must be at least " + std::to_string(min)
               : "must be between " + std::to_string(min) + " and " + std::to_string(max));
      return false;
    }
    out = static_cast<Int>(value);
    return true;
  }

  bool boolean(const toml::table& table, const std::string& prefix, std::string_view name, bool& out) {
    const toml::node* node = find(table, prefix, name, Need::optional);
    if (node == nullptr) return false;
    if (!node->is_boolean()) {
      fail(join(prefix, name), "expected true or false");
      return false;
    }
    out = node->as_boolean()->get();
    return true;
  }

  // A finite, non-negative number; TOML integers are accepted too ("5" for 5.0).
  bool number(const toml::table& table, const std::string& prefix, std::string_view name, double& out) {
    const toml::node* node = find(table, prefix, name, Need::optional);
    if (node == nullptr) return false;
    double value = 0;
    if (node->is_floating_point()) {
      value = node->as_floating_point()->get();
    } else if (node->is_integer()) {
      value = static_cast<double>(node->as_integer()->get());
    } else {
      fail(join(prefix, name), "expected a number");
      return false;
    }
    if (!(value >= 0 && value <= 1e9)) {
      fail(join(prefix, name), "must be a number from 0 to 1e9");
      return false;
    }
    out = value;
    return true;
  }

  void seconds(const toml::table& table, const std::string& prefix, std::string_view name,
               std::chrono::seconds& out) {
    std::int64_t value = 0;
    if (integer(table, prefix, name, value, 1, kMaxTimeoutSeconds)) out = std::chrono::seconds(value);
  }

  // An array of tables ([[name]] or name = [{...}]), as (key, table) pairs.
  std::vector<std::pair<std::string, const toml::table*>> tables(const toml::table& parent,
                                                                 const std::string& prefix,
                                                                 std::string_view name) {
    std::vector<std::pair<std::string, const toml::table*>> out;
    const toml::node* node = find(parent, prefix, name, Need::optional);
    if (node == nullptr) return out;
    if (!node->is_array()) {
      fail(join(prefix, name), "expected an array of tables");
      return out;
    }
    const toml::array& array = *node->as_array();
    for (std::size_t i = 0; i < array.size(); ++i) {
      const std::string key = indexed(join(prefix, name), i);
      if (!array[i].is_table()) {
        fail(key, "expected a table");
        return {};
      }
      out.emplace_back(key, array[i].as_table());
    }
    return out;
  }

 private:
  fs::path base_dir_;
  std::optional<std::string> error_;
};

// An array of strings; absent is fine (out keeps its default).
bool strings(Reader& r, const toml::table& table, const std::string& prefix, std::string_view name,
             std::vector<std::string>& out) {
  const toml::node* node = r.find(table, prefix, name, Need::optional);
  if (node == nullptr) return false;
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    r.fail(join(prefix, name), "expected an array of strings");
    return false;
  }
  std::vector<std::string> values;
  for (std::size_t i = 0; i < array->size(); ++i) {
    const auto* text = (*array)[i].as_string();
    if (text == nullptr) {
      r.fail(indexed(join(prefix, name), i), "expected a string");
      return false;
    }
    values.push_back(text->get());
  }
  out = std::move(values);
  return true;
}

void read_listeners(Reader& r, const toml::table& root, Config& config) {
  const auto listeners = r.tables(root, "", "listener");
  if (!r.failed() && listeners.empty()) {
    r.fail("listener", "at least one [[listener]] table is required");
  }
  for (const auto& [key, table] : listeners) {
    r.check_keys(*table, key, {"address", "tls", "milters"});
    Listener listener;
    std::string address;
    if (r.string(*table, key, "address", address, Need::required)) {
      if (auto problem = parse_address(address, listener)) r.fail(key + ".address", *problem);
    }
    std::string mode;
    if (r.string(*table, key, "tls", mode)) {
      if (auto parsed = parse_tls_mode(mode)) {
        listener.tls = *parsed;
      } else {
        r.fail(key + ".tls", "expected one of none, may, encrypt, implicit");
      }
    }
    // Endpoint syntax is checked where milters are built (milter::parse_milter_endpoint).
    strings(r, *table, key, "milters", listener.milters);
    if (r.failed()) return;
    for (std::size_t i = 0; i < config.listeners.size(); ++i) {
      const Listener& other = config.listeners[i];
      if (other.host == listener.host && other.port == listener.port) {
        r.fail(key + ".address", "same address as listener[" + std::to_string(i) + "]");
        return;
      }
    }
    config.listeners.push_back(std::move(listener));
  }
}

void read_tls(Reader& r, const toml::table& root, Config& config) {
  Tls& tls = config.tls;
  if (const toml::table* table = r.table(root, "", "tls")) {
    r.check_keys(*table, "tls", {"certificates", "min_version", "ciphers", "ciphersuites", "groups"});
    for (const auto& [key, pair_table] : r.tables(*table, "tls", "certificates")) {
      r.check_keys(*pair_table, key, {"cert", "key"});
      CertificatePair pair;
      r.path(*pair_table, key, "cert", pair.cert, Need::required);
      r.path(*pair_table, key, "key", pair.key, Need::required);
      if (r.failed()) return;
      for (const auto& [name, file] : {std::pair{"cert", &pair.cert}, std::pair{"key", &pair.key}}) {
        if (auto why = unreadable(*file)) {
          r.fail(key + "." + name, "cannot read " + printable(file->string()) + ": " + *why);
          return;
        }
      }
      tls.certificates.push_back(std::move(pair));
    }
    if (r.string(*table, "tls", "min_version", tls.min_version) && tls.min_version != "TLSv1.2" &&
        tls.min_version != "TLSv1.3") {
      r.fail("tls.min_version", "expected one of TLSv1.2, TLSv1.3");
    }
    r.string(*table, "tls", "ciphers", tls.ciphers);
    r.string(*table, "tls", "ciphersuites", tls.ciphersuites);
    r.string(*table, "tls", "groups", tls.groups);
  }
  if (r.failed() || !tls.certificates.empty()) return;
  for (std::size_t i = 0; i < config.listeners.size(); ++i) {
    if (config.listeners[i].tls != TlsMode::none) {
      r.fail("tls.certificates", "at least one {cert, key} pair is required because listener[" +
                                     std::to_string(i) + "].tls is \"" +
                                     std::string(to_string(config.listeners[i].tls)) + "\"");
      return;
    }
  }
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// "a.b/len" with a literal address and a prefix length that fits it.
bool valid_network(std::string_view text) {
  const auto slash = text.find('/');
  const std::string host(text.substr(0, slash));
  unsigned char buffer[sizeof(in6_addr)];
  const bool v6 = host.find(':') != std::string::npos;
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), buffer) != 1) return false;
  if (slash == std::string_view::npos) return true;
  const auto len_text = text.substr(slash + 1);
  unsigned len = 0;
  const auto [end, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  return !len_text.empty() && ec == std::errc() && end == len_text.data() + len_text.size() &&
         len <= (v6 ? 128u : 32u);
}

// next_hop: "mx", "maildir", "smtp:[host]:port", "smtp:host:port", "smtp:host".
std::optional<std::string> parse_next_hop(std::string_view text, Route& route) {
  route.next_hop = std::string(text);
  if (text == "mx") {
    route.kind = Route::Kind::mx;
    return std::nullopt;
  }
  if (text == "maildir") {
    route.kind = Route::Kind::maildir;
    return std::nullopt;
  }
  const std::string expected = " (expected \"mx\", \"maildir\", \"smtp:[host]:port\" or \"smtp:host:port\")";
  if (text.substr(0, 5) != "smtp:") return quote(text) + " is not a next hop" + expected;
  text.remove_prefix(5);
  route.kind = Route::Kind::smtp;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return quote(route.next_hop) + ": missing ]" + expected;
    route.host = std::string(text.substr(1, close - 1));
    route.mx_lookup = false;
    const auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return quote(route.next_hop) + ": expected :port after ]" + expected;
      port = rest.substr(1);
    }
  } else {
    const auto colon = text.rfind(':');
    route.host = std::string(text.substr(0, colon));
    if (colon != std::string_view::npos) port = text.substr(colon + 1);
    route.mx_lookup = true;
  }
  if (route.host.empty()) return quote(route.next_hop) + ": no host" + expected;
  if (route.mx_lookup && !looks_like_domain(route.host)) {
    return quote(route.host) + " is not a host name (put an IP address in brackets)";
  }
  if (!port.empty()) {
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535) {
      return "port " + quote(port) + " is not a number from 1 to 65535";
    }
    route.port = static_cast<std::uint16_t>(value);
  }
  return std::nullopt;
}

constexpr const char* kTlsLevels = "expected one of none, may, encrypt, dane, dane-only, verify";

void read_routes(Reader& r, const toml::table& root, Config& config) {
  for (const auto& [key, table] : r.tables(root, "", "route")) {
    r.check_keys(*table, key, {"domain", "next_hop", "tls"});
    Route route;
    std::string domain;
    if (r.string(*table, key, "domain", domain, Need::required) && domain != "*" &&
        !looks_like_domain(domain)) {
      r.fail(key + ".domain", quote(domain) + " is not a domain name or \"*\"");
    }
    route.domain = lower(domain);
    std::string hop;
    if (r.string(*table, key, "next_hop", hop, Need::required)) {
      if (auto problem = parse_next_hop(hop, route)) r.fail(key + ".next_hop", *problem);
    }
    if (r.string(*table, key, "tls", route.tls) && !is_tls_level(route.tls)) {
      r.fail(key + ".tls", kTlsLevels);
    }
    if (r.failed()) return;
    config.routes.push_back(std::move(route));
  }
}

void read_delivery(Reader& r, const toml::table& root, Delivery& delivery) {
  const toml::table* table = r.table(root, "", "delivery");
  if (table == nullptr) return;
  constexpr auto kNoMax = std::numeric_limits<std::int64_t>::max();
  r.check_keys(*table, "delivery", {"maildir", "mx_port", "tls", "max_parallel", "destination_concurrency"});
  r.path(*table, "delivery", "maildir", delivery.maildir);
  r.integer(*table, "delivery", "mx_port", delivery.mx_port, 1, 65535);
  if (r.string(*table, "delivery", "tls", delivery.tls) && !is_tls_level(delivery.tls)) {
    r.fail("delivery.tls", kTlsLevels);
  }
  r.integer(*table, "delivery", "max_parallel", delivery.max_parallel, 1, kNoMax);
  r.integer(*table, "delivery", "destination_concurrency", delivery.destination_concurrency, 1, kNoMax);
}

void read_queue(Reader& r, const toml::table& root, Queue& queue) {
  const toml::table* table = r.table(root, "", "queue");
  if (table == nullptr) return;
  r.check_keys(*table, "queue", {"retry_initial", "retry_max", "max_lifetime", "sync_threads"});
  constexpr std::int64_t kYear = 366 * 86400;
  std::int64_t value = 0;
  if (r.integer(*table, "queue", "retry_initial", value, 1, kYear)) queue.retry_initial = std::chrono::seconds(value);
  if (r.integer(*table, "queue", "retry_max", value, 1, kYear)) queue.retry_max = std::chrono::seconds(value);
  if (r.integer(*table, "queue", "max_lifetime", value, 0, kYear)) queue.max_lifetime = std::chrono::seconds(value);
  r.integer(*table, "queue", "sync_threads", queue.sync_threads, 1, 64);
  if (!r.failed() && queue.retry_max < queue.retry_initial) {
    r.fail("queue.retry_max", "must not be less than queue.retry_initial");
  }
}

void read_dns(Reader& r, const toml::table& root, Dns& dns) {
  const toml::table* table = r.table(root, "", "dns");
  if (table == nullptr) return;
  r.check_keys(*table, "dns", {"trust_anchor_files", "stub_zone", "trust_anchor"});
  std::vector<std::string> files;
  if (strings(r, *table, "dns", "trust_anchor_files", files)) {
    dns.trust_anchor_files.clear();
    for (std::size_t i = 0; i < files.size(); ++i) {
      const fs::path file(files[i]);
      if (auto why = unreadable(file)) {
        r.fail(indexed("dns.trust_anchor_files", i), "cannot read " + printable(files[i]) + ": " + *why);
        return;
      }
      dns.trust_anchor_files.push_back(file);
    }
  }
  for (const auto& [key, zone_table] : r.tables(*table, "dns", "stub_zone")) {
    r.check_keys(*zone_table, key, {"name", "addresses"});
    StubZone zone;
    if (r.string(*zone_table, key, "name", zone.name, Need::required) && !looks_like_domain(zone.name)) {
      r.fail(key + ".name", quote(zone.name) + " is not a domain name");
    }
    if (!strings(r, *zone_table, key, "addresses", zone.addresses) && !r.failed()) {
      r.fail(key + ".addresses", "missing required key");
    }
    for (std::size_t i = 0; !r.failed() && i < zone.addresses.size(); ++i) {
      const std::string& address = zone.addresses[i];
      if (!valid_network(address.substr(0, address.find('@')))) {
        r.fail(indexed(key + ".addresses", i), quote(address) + " is not an IP address (optionally @port)");
      }
    }
    if (r.failed()) return;
    dns.stub_zones.push_back(std::move(zone));
  }
  for (const auto& [key, anchor_table] : r.tables(*table, "dns", "trust_anchor")) {
    r.check_keys(*anchor_table, key, {"rr"});
    std::string rr;
    if (r.string(*anchor_table, key, "rr", rr, Need::required)) dns.trust_anchors.push_back(rr);
  }
}

void read_relay_policy(Reader& r, const toml::table& root, Config& config) {
  if (strings(r, root, "", "accept_domains", config.accept_domains)) {
    for (std::size_t i = 0; i < config.accept_domains.size(); ++i) {
      if (!looks_like_domain(config.accept_domains[i])) {
        r.fail(indexed("accept_domains", i), quote(config.accept_domains[i]) + " is not a domain name");
        return;
      }
      config.accept_domains[i] = lower(config.accept_domains[i]);
    }
  }
  if (strings(r, root, "", "relay_networks", config.relay_networks)) {
    for (std::size_t i = 0; i < config.relay_networks.size(); ++i) {
      if (!valid_network(config.relay_networks[i])) {
        r.fail(indexed("relay_networks", i),
               quote(config.relay_networks[i]) + " is not an address or network (e.g. \"192.0.2.0/24\")");
        return;
      }
    }
  }
}

void read_limits(Reader& r, const toml::table& root, Limits& limits) {
  const toml::table* table = r.table(root, "", "limits");
  if (table == nullptr) return;
  constexpr auto kNoMax = std::numeric_limits<std::int64_t>::max();
  r.check_keys(*table, "limits",
               {"max_message_size", "max_recipients", "max_command_line", "max_errors", "max_connections",
                "max_connections_per_client", "max_connection_rate_per_client", "max_message_rate_per_client"});
  r.integer(*table, "limits", "max_message_size", limits.max_message_size, 1, kNoMax);
  r.integer(*table, "limits", "max_recipients", limits.max_recipients, 1, kNoMax);
  r.integer(*table, "limits", "max_command_line", limits.max_command_line, 512, 65536);
  r.integer(*table, "limits", "max_errors", limits.max_errors, 1, std::numeric_limits<unsigned>::max());
  r.integer(*table, "limits", "max_connections", limits.max_connections, 1, kNoMax);
  r.integer(*table, "limits", "max_connections_per_client", limits.max_connections_per_client, 0, kNoMax);
  r.integer(*table, "limits", "max_connection_rate_per_client", limits.max_connection_rate_per_client, 0, kNoMax);
  r.integer(*table, "limits", "max_message_rate_per_client", limits.max_message_rate_per_client, 0, kNoMax);
}

std::optional<FilterAction> parse_filter_action(std::string_view text) {
  for (const FilterAction action : {FilterAction::accept, FilterAction::tag, FilterAction::tempfail,
                                    FilterAction::quarantine, FilterAction::reject}) {
    if (text == to_string(action)) return action;
  }
  return std::nullopt;
}

void filter_action(Reader& r, const toml::table& table, const std::string& prefix, std::string_view name,
                   FilterAction& out) {
  std::string text;
  if (!r.string(table, prefix, name, text)) return;
  if (auto action = parse_filter_action(text)) {
    out = *action;
  } else {
    r.fail(join(prefix, name), "expected one of accept, tag, quarantine, reject, tempfail");
  }
}

void read_filter(Reader& r, const toml::table& root, Config& config) {
  Filter& filter = config.filter;
  filter.protected_domains = config.accept_domains;
  const toml::table* table = r.table(root, "", "filter");
  if (table == nullptr) return;
  constexpr auto kNoMax = std::numeric_limits<std::int64_t>::max();
  r.check_keys(*table, "filter",
               {"enabled", "protected_domains", "protected_names", "clamd", "clamd_max_stream", "spam_threshold",
                "phishing_threshold", "malware_threshold", "impersonation_threshold", "actions", "on_failure",
                "time_budget", "max_mime_depth", "max_mime_parts", "max_decoded_size", "max_archive_depth",
                "max_archive_entries", "max_archive_expanded", "bayes_db", "bayes_min_spam", "bayes_min_ham", "dnsbl", "uribl", "dnsbl_score",
                "uribl_score", "reject_dnsbl_clients", "reject_spf_fail", "reject_invalid_helo", "subject_tag", "rules", "rule_scores"});
  r.boolean(*table, "filter", "enabled", filter.enabled);
  if (strings(r, *table, "filter", "protected_domains", filter.protected_domains)) {
    for (std::size_t i = 0; i < filter.protected_domains.size(); ++i) {
      if (!looks_like_domain(filter.protected_domains[i])) {
        r.fail(indexed("filter.protected_domains", i), quote(filter.protected_domains[i]) + " is not a domain name");
        return;
      }
      filter.protected_domains[i] = lower(filter.protected_domains[i]);
    }
  }
  strings(r, *table, "filter", "protected_names", filter.protected_names);
  if (r.string(*table, "filter", "clamd", filter.clamd) && !filter.clamd.empty() &&
      filter.clamd.rfind("unix:", 0) != 0 && filter.clamd.rfind("tcp:", 0) != 0) {
    r.fail("filter.clamd", quote(filter.clamd) + " is not \"unix:/path\" or \"tcp:host:port\"");
  }
  r.integer(*table, "filter", "clamd_max_stream", filter.clamd_max_stream, 1, kNoMax);
  r.number(*table, "filter", "spam_threshold", filter.spam_threshold);
  r.number(*table, "filter", "phishing_threshold", filter.phishing_threshold);
  r.number(*table, "filter", "malware_threshold", filter.malware_threshold);
  r.number(*table, "filter", "impersonation_threshold", filter.impersonation_threshold);
  if (const toml::table* actions = r.table(*table, "filter", "actions")) {
    r.check_keys(*actions, "filter.actions", {"spam", "phishing", "malware", "impersonation"});
    filter_action(r, *actions, "filter.actions", "spam", filter.actions.spam);
    filter_action(r, *actions, "filter.actions", "phishing", filter.actions.phishing);
    filter_action(r, *actions, "filter.actions", "malware", filter.actions.malware);
    filter_action(r, *actions, "filter.actions", "impersonation", filter.actions.impersonation);
  }
  filter_action(r, *table, "filter", "on_failure", filter.on_failure);
  if (r.string(*table, "filter", "subject_tag", filter.subject_tag) &&
      filter.subject_tag.find_first_of("\r\n") != std::string::npos) {
    r.fail("filter.subject_tag", "must be one line");
  }
  r.seconds(*table, "filter", "time_budget", filter.time_budget);
  r.integer(*table, "filter", "max_mime_depth", filter.max_mime_depth, 1, 1000);
  r.integer(*table, "filter", "max_mime_parts", filter.max_mime_parts, 1, kNoMax);
  r.integer(*table, "filter", "max_decoded_size", filter.max_decoded_size, 1, kNoMax);
  r.integer(*table, "filter", "max_archive_depth", filter.max_archive_depth, 0, 100);
  r.integer(*table, "filter", "max_archive_entries", filter.max_archive_entries, 1, kNoMax);
  r.integer(*table, "filter", "max_archive_expanded", filter.max_archive_expanded, 1, kNoMax);
  r.path(*table, "filter", "bayes_db", filter.bayes_db);
  r.integer(*table, "filter", "bayes_min_spam", filter.bayes_min_spam, 1, kNoMax);
  r.integer(*table, "filter", "bayes_min_ham", filter.bayes_min_ham, 1, kNoMax);
  for (const char* key : {"dnsbl", "uribl"}) {
    auto& zones = std::string_view(key) == "dnsbl" ? filter.dnsbl : filter.uribl;
    if (!strings(r, *table, "filter", key, zones)) continue;
    for (std::size_t i = 0; i < zones.size(); ++i) {
      if (!looks_like_domain(zones[i])) {
        r.fail(indexed(std::string("filter.") + key, i), quote(zones[i]) + " is not a domain name");
        return;
      }
      zones[i] = lower(zones[i]);
    }
  }
  r.number(*table, "filter", "dnsbl_score", filter.dnsbl_score);
  r.number(*table, "filter", "uribl_score", filter.uribl_score);
  if (r.boolean(*table, "filter", "reject_dnsbl_clients", filter.reject_dnsbl_clients) &&
      filter.reject_dnsbl_clients && filter.dnsbl.empty()) {
    r.fail("filter.reject_dnsbl_clients", "needs at least one filter.dnsbl zone to look clients up in");
    return;
  }
  r.boolean(*table, "filter", "reject_spf_fail", filter.reject_spf_fail);
  r.boolean(*table, "filter", "reject_invalid_helo", filter.reject_invalid_helo);
  r.path(*table, "filter", "rules", filter.rules);
  if (const toml::table* scores = r.table(*table, "filter", "rule_scores")) {
    for (const auto& [name, value] : *scores) {
      const std::string key = "filter.rule_scores." + std::string(name.str());
      if (!value.is_number() || !std::isfinite(value.value<double>().value_or(0))) {
        r.fail(key, "must be a number");
        return;
      }
      filter.rule_scores[std::string(name.str())] = value.value<double>().value_or(0);
    }
  }
}

void read_timeouts(Reader& r, const toml::table& root, Timeouts& timeouts) {
  const toml::table* table = r.table(root, "", "timeouts");
  if (table == nullptr) return;
  r.check_keys(*table, "timeouts", {"command", "data", "tls_handshake", "shutdown"});
  r.seconds(*table, "timeouts", "command", timeouts.command);
  r.seconds(*table, "timeouts", "data", timeouts.data);
  r.seconds(*table, "timeouts", "tls_handshake", timeouts.tls_handshake);
  r.seconds(*table, "timeouts", "shutdown", timeouts.shutdown);
}

}  // namespace

std::string_view to_string(TlsMode mode) {
  switch (mode) {
    case TlsMode::none:
      return "none";
    case TlsMode::may:
      return "may";
    case TlsMode::encrypt:
      return "encrypt";
    case TlsMode::implicit:
      return "implicit";
  }
  return "unknown";
}

std::string_view to_string(FilterAction action) {
  switch (action) {
    case FilterAction::accept: return "accept";
    case FilterAction::tag: return "tag";
    case FilterAction::tempfail: return "tempfail";
    case FilterAction::quarantine: return "quarantine";
    case FilterAction::reject: return "reject";
  }
  return "tempfail";
}

bool is_tls_level(std::string_view text) {
  for (const char* level : {"none", "may", "encrypt", "dane", "dane-only", "verify"})
    if (text == level) return true;
  return false;
}

const Route* find_route(const Config& config, std::string_view domain) {
  const std::string wanted = lower(domain);
  for (const Route& route : config.routes)
    if (route.domain == "*" || route.domain == wanted) return &route;
  return nullptr;
}

Result<Config> parse(std::string_view toml_text, const fs::path& base_dir) {
  toml::table root;
  try {
    root = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    return make_error("line " + std::to_string(e.source().begin.line) + ", column " +
                      std::to_string(e.source().begin.column) + ": " + printable(e.description()));
  }

  Config config;
  Reader r(base_dir);
  r.check_keys(root, "", {"hostname", "spool", "user", "listener", "tls", "limits", "timeouts", "delivery",
                          "route", "accept_domains", "relay_networks", "queue", "dns", "filter"});
  if (r.string(root, "", "hostname", config.hostname, Need::required) &&
      !looks_like_domain(config.hostname)) {
    r.fail("hostname", quote(config.hostname) + " is not a domain name");
  }
  r.path(root, "", "spool", config.spool, Need::required);
  if (r.string(root, "", "user", config.user) && config.user.empty()) {
    r.fail("user", "must not be empty (leave the key out to keep the current user)");
  }
  read_listeners(r, root, config);
  read_tls(r, root, config);
  read_limits(r, root, config.limits);
  read_timeouts(r, root, config.timeouts);
  read_delivery(r, root, config.delivery);
  read_routes(r, root, config);
  read_relay_policy(r, root, config);
  read_queue(r, root, config.queue);
  read_dns(r, root, config.dns);
  read_filter(r, root, config);
  if (!r.failed() && config.filter.bayes_db.empty()) config.filter.bayes_db = config.spool / "bayes.sqlite";
  if (!r.failed() && config.delivery.maildir.empty()) {
    for (const Route& route : config.routes) {
      if (route.kind == Route::Kind::maildir) {
        r.fail("delivery.maildir", "required because a route has next_hop = \"maildir\"");
        break;
      }
    }
  }

  if (r.failed()) return make_error(r.error());
  return config;
}

Result<Config> load_file(const fs::path& file) {
  std::error_code ec;
  const fs::path absolute = fs::absolute(file, ec);
  if (ec) return make_error("cannot read " + file.string() + ": " + ec.message());

  std::string text;
  if (const int err = read_file(absolute, text); err != 0)
    return make_error("cannot read " + file.string() + ": " + errno_text(err));

  auto config = parse(text, absolute.parent_path());
  if (config) config->source = absolute;
  return config;
}

}  // namespace mxgate::config
