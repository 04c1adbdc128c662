// The SMTP client that relays spooled mail (RFC 5321 as a client, with RFC
// 2920 PIPELINING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8 and
// RFC 3207 STARTTLS).  STARTTLS hardening: bytes the server sends after its
// 220 and before the handshake are discarded (response injection), anything
// but 220 is failure; after TLS the client says EHLO again.  DANE uses
// OpenSSL's own API (SSL_dane_enable, SSL_dane_tlsa_add; RFC 7672).
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "delivery/tls_policy.hpp"
#include "queue/envelope.hpp"

namespace mxgate::delivery {

struct ClientSettings {
  std::string helo_name;                            // our hostname
  std::chrono::seconds connect_timeout{30};
  std::chrono::seconds greeting_timeout{300};       // RFC 5321 4.5.3.2.1: 5 min
  std::chrono::seconds command_timeout{300};        // MAIL 5 min, RCPT 5 min
  std::chrono::seconds data_init_timeout{120};      // DATA 2 min
  std::chrono::seconds data_block_timeout{180};     // 3 min per write
  std::chrono::seconds data_end_timeout{600};       // final "." 10 min
  std::chrono::seconds tls_handshake_timeout{60};
};

struct RecipientResult {
  std::string recipient;
  int code = 0;            // the server's reply to RCPT, or to end of data once accepted
  std::string reply;       // the whole reply text, e.g. "550 5.1.1 No such user"
};

struct AttemptResult {
  // connection-level: could not connect, no/bad greeting, TLS policy failure,
  // connection lost before the transaction finished.  The caller tries the
  // next MX host/address, and recipients without a result are deferred.
  bool connection_failed = false;
  std::string error;                       // "STARTTLS not offered", "TLSA mismatch", ...
  std::vector<RecipientResult> recipients; // one per recipient that got a final answer
  // "verified TLS (DANE-EE) TLSv1.3 TLS_AES_256_GCM_SHA384", "anonymous TLS TLSv1.3 ...",
  // "trusted TLS TLSv1.3 ..." (verify), or "cleartext"
  std::string tls_summary;
};

namespace client_detail {
class Attempt;
}

// Connection reuse (as Postfix's scache): after a transaction that ended
// cleanly the connection is parked here instead of saying QUIT, keyed by
// the server address and port and the TLS requirement (mode, host, TLSA
// records); the next delivery with the same key starts with MAIL on it.
// A parked connection is closed (with QUIT) after max_idle, or by
// close_all().  Single-threaded: used only on the executor given.
class ConnectionCache {
 public:
  ConnectionCache(const asio::any_io_executor& executor, std::chrono::steady_clock::duration max_idle,
                  std::size_t max_per_key);
  ~ConnectionCache();
  ConnectionCache(const ConnectionCache&) = delete;
  ConnectionCache& operator=(const ConnectionCache&) = delete;

  // The most recently parked live connection for key, or null.
  std::shared_ptr<client_detail::Attempt> take(const std::string& key);
  // Parks connection under key; over max_per_key it is closed with QUIT instead.
  void park(const std::string& key, std::shared_ptr<client_detail::Attempt> connection);
  // Closes every parked connection (QUIT written without waiting for its
  // reply); for when the event loop has stopped.
  void close_all();
  std::size_t size() const;

 private:
  struct Entry {
    std::shared_ptr<client_detail::Attempt> connection;
    std::chrono::steady_clock::time_point expires;
  };
  void schedule_sweep();
  void sweep();

  std::chrono::steady_clock::duration max_idle_;
  std::size_t max_per_key_;
  asio::steady_timer timer_;
  bool timer_armed_ = false;
  std::map<std::string, std::vector<Entry>> entries_;  // oldest first
};

// The cache key: "address:port" and the TLS requirement.
std::string connection_cache_key(const asio::ip::tcp::endpoint& server, const TlsRequirement& tls);

// Delivers one message to one server address for the given recipients.
// With a cache, a parked connection for the same key is used first (a dead
// one is closed and a new connection made, transparently), and a connection
// whose transaction ended cleanly is parked instead of saying QUIT.
asio::awaitable<AttemptResult> deliver_over_smtp(const asio::ip::tcp::endpoint& server,
                                                 const ClientSettings& settings,
                                                 const TlsRequirement& tls,
                                                 const queue::Envelope& envelope,
                                                 const std::string& content,
                                                 const std::vector<std::string>& recipients,
                                                 ConnectionCache* cache = nullptr);

// mxgate probe: one connection that goes as far as the EHLO after STARTTLS
// (or the first EHLO without TLS) and says QUIT; it never sends MAIL.
struct ProbeResult {
  bool connected = false;
  std::string greeting;          // the greeting reply, e.g. "220 mx.example ESMTP"
  bool starttls_offered = false; // in the cleartext EHLO reply
  bool tls = false;              // the handshake completed
  std::string tls_version;       // "TLSv1.3"
  std::string cipher;            // "TLS_AES_256_GCM_SHA384"
  std::string peer_subject;      // RFC 2253 form
  std::string peer_issuer;
  std::string peer_spki_sha256;  // hex SHA-256 of the SubjectPublicKeyInfo
  bool dane_verified = false;
  // "DANE-EE" or "DANE-TA" when verified; else why not: "TLSA mismatch",
  // "certificate verification failed: ...", "not attempted (...)"
  std::string verification;
  std::string error;             // why the dialogue failed, empty when it went to QUIT
  std::string tls_summary;       // as AttemptResult::tls_summary
};

// Probes one server address with the given TLS requirement.  With
// Mode::dane the handshake completes even when verification fails, so the
// peer's certificate is reported either way.
asio::awaitable<ProbeResult> probe_smtp(const asio::ip::tcp::endpoint& server, const ClientSettings& settings,
                                        const TlsRequirement& tls);

}  // namespace mxgate::delivery
