// DNS with DNSSEC validation built in: libunbound, driven asynchronously from
// an Asio io_context through its file descriptor (ub_fd / ub_process), so no
// separate validating resolver is needed for DANE.  Every answer says whether
// it is secure, insecure or bogus (RFC 4035 section 4.3), which is what RFC
// 7672 section 2.1 bases its decisions on.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <chrono>
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
  // e.g. /usr/share/dns/root.key (Debian package dns-root-data: the root KSK as
  // DS and DNSKEY, updated by the package, not by RFC 5011 tracking).
  std::vector<std::filesystem::path> trust_anchor_files;
  std::vector<std::string> trust_anchors;  // DS or DNSKEY RRs as text, one per string
  // Only these zones go to the given servers; everything else is full
  // recursion from the root hints.  A stub zone under a special-use name
  // (test., invalid., home.arpa., ...) is resolved through the stub, not
  // answered locally, and loopback stub addresses are allowed.
  std::vector<StubZone> stub_zones;
  // Each query (A and AAAA of addresses() each) ends with Status::failure
  // after this long.  Must be positive.
  std::chrono::milliseconds query_timeout{std::chrono::seconds(30)};
};

// One libunbound context per Resolver, in threaded async mode; its result
// pipe is watched by io, so callbacks and coroutine resumptions all happen on
// the thread running io (run io on one thread only).  Destroying the Resolver
// cancels every pending query: suspended callers resume with Status::failure
// ("resolver shut down"); an awaitable obtained from it may still be started
// later and fails the same way.  Destroy it before io.
//
// Mapping of libunbound's answer (RFC 4035 section 4.3):
//   bogus                    -> status failure, security bogus, reason why_bogus
//   rcode NXDOMAIN           -> nxdomain   (security secure or insecure)
//   other rcode, error, timeout, malformed rdata -> failure
//   NOERROR without data     -> nodata
//   NOERROR with data        -> ok, records in the order libunbound gave them
class Resolver {
 public:
  // Creates the libunbound context on io's thread; errors name the option.
  // The options are applied and checked here (trust anchor files readable,
  // stub addresses well formed, anchors parsed), not at the first query.
  static Result<std::unique_ptr<Resolver>> create(asio::io_context& io, const ResolverOptions& options);
  virtual ~Resolver() = default;

  virtual asio::awaitable<Answer<MxRecord>> mx(std::string domain) = 0;
  // A and AAAA together (queried concurrently; A's addresses first): ok when
  // either has addresses, else failure if either failed, else nxdomain if A
  // says so, else nodata.  Security is the weaker of the two answers, so an
  // ok answer can still be bogus (one of the two was).  reason says which.
  virtual asio::awaitable<Answer<asio::ip::address>> addresses(std::string host) = 0;
  // TLSA at _<port>._tcp.<host> (RFC 7672 section 2.2.3).
  virtual asio::awaitable<Answer<TlsaRecord>> tlsa(std::uint16_t port, std::string host) = 0;
  // TXT at name, each record's strings joined (wire::parse_txt): SPF,
  // DKIM keys, DMARC policies, DNSBL reasons.
  virtual asio::awaitable<Answer<std::string>> txt(std::string name) = 0;
};

std::string_view to_string(Security security);

}  // namespace mxgate::dns
