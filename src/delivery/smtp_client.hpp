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
#include <chrono>
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

// Delivers one message to one server address for the given recipients.
asio::awaitable<AttemptResult> deliver_over_smtp(const asio::ip::tcp::endpoint& server,
                                                 const ClientSettings& settings,
                                                 const TlsRequirement& tls,
                                                 const queue::Envelope& envelope,
                                                 const std::string& content,
                                                 const std::vector<std::string>& recipients);

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
