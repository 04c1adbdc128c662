// DNS with DNSSEC validation built in: libunbound, driven asynchronously from
// an Asio io_context through its file descriptor (ub_fd / ub_process), so no
// separate validating resolver is needed for DANE.  Every answer says whether
// it is secure, insecure or bogus (RFC 4035 section 4.3), which is what RFC
// 7672 section 2.1 bases its decisions on.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "util/result.hpp"

namespace mxgate::dns {

enum class Security { secure, insecure, bogus };

enum class Status {
  ok,        // records present (records may still be empty for a CNAME-only answer)
  nxdomain,  // the name does not exist
  nodata,    // the name exists, no records of the type
  failure,   // SERVFAIL, timeout, network error: a temporary condition
};

struct MxRecord {
  std::uint16_t preference = 0;
  std::string host;  // without the trailing dot; "" (from ".") is the RFC 7505 null MX
};

struct TlsaRecord {
  std::uint8_t usage = 0;          // 0..3 (RFC 6698 section 2.1.1)
  std::uint8_t selector = 0;       // 0 full cert, 1 SubjectPublicKeyInfo
  std::uint8_t matching_type = 0;  // 0 exact, 1 SHA-256, 2 SHA-512
  std::vector<std::uint8_t> data;
};

template <class T>
struct Answer {
  Status status = Status::failure;
  Security security = Security::insecure;
  std::vector<T> records;
  std::string reason;  // for failure/bogus: libunbound's why_bogus or error text
};

struct StubZone {
  std::string name;                    // "dane.test"
  std::vector<std::string> addresses;  // "127.0.0.1@5300" (unbound's addr@port form)
};

struct ResolverOptions {
  std::vector<std::filesystem::path> trust_anchor_files;  // e.g. /usr/share/dns/root.key
  std::vector<std::string> trust_anchors;                 // DS or DNSKEY RRs as text
  std::vector<StubZone> stub_zones;
};

class Resolver {
 public:
  // Creates the libunbound context on io's thread; errors name the option.
  static Result<std::unique_ptr<Resolver>> create(asio::io_context& io, const ResolverOptions& options);
  virtual ~Resolver() = default;

  virtual asio::awaitable<Answer<MxRecord>> mx(std::string domain) = 0;
  // A and AAAA together; security is the weaker of the two answers.
  virtual asio::awaitable<Answer<asio::ip::address>> addresses(std::string host) = 0;
  // TLSA at _<port>._tcp.<host> (RFC 7672 section 2.2.3).
  virtual asio::awaitable<Answer<TlsaRecord>> tlsa(std::uint16_t port, std::string host) = 0;
};

std::string_view to_string(Security security);

}  // namespace mxgate::dns
