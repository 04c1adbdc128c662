// One SMTP connection: the thin coroutine shell around smtp::Session.  It
// reads bytes into the session, writes the replies it produces, and performs
// the session's requests (TLS handshake, durable store, close) with a
// deadline on every wait (RFC 5321 section 4.5.3.2).  All protocol decisions
// live in the session.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "filter/finding.hpp"
#include "filter/pending_result.hpp"
#include "sender_auth/spf.hpp"
#include "smtp/session.hpp"
#include "tls/stream.hpp"
#include "util/deadline.hpp"


namespace mxgate::server {

class ConnectionHost;

// The client's IP address without the IPv4-mapped prefix a dual-stack
// listener gives it.
asio::ip::address client_address(const asio::ip::tcp::endpoint& peer);

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // peer is the client's address as accept(2) gave it (no getpeername(2)).
  Connection(asio::ip::tcp::socket socket, const asio::ip::tcp::endpoint& peer, ConnectionHost& host,
             const config::Listener& listener);
  ~Connection();

  asio::awaitable<void> run();

  // Server shutdown: idle sessions are told 421 now, sessions in a
  // transaction get until deadline.
  void begin_shutdown(std::chrono::steady_clock::time_point deadline);
  const std::string& client_ip() const { return client_ip_; }

 private:
  using Clock = std::chrono::steady_clock;

  asio::awaitable<void> watchdog();
  // last: the session's final reply; over TLS, close_notify goes with it.
  asio::awaitable<bool> write_all(std::string_view bytes, bool last = false);
  asio::awaitable<std::size_t> read_some();
  asio::awaitable<bool> handshake();
  // Filters (when on) and stores, quarantines or refuses the message.
  asio::awaitable<void> finish_message();
  // The RCPT-stage checks for the recipient the session holds back.
  asio::awaitable<void> check_recipient();
  void arm(Clock::duration timeout);
  void log_end();

  ConnectionHost& host_;
  const config::Listener& listener_;
  asio::ip::tcp::socket socket_;
  std::unique_ptr<tls::Stream> tls_;  // after STARTTLS or for implicit TLS
  Deadline deadline_;
  Clock::time_point shutdown_deadline_ = Clock::time_point::max();
  bool shutting_down_ = false;
  std::string peer_;  // "ip:port" for logs
  std::uint16_t peer_port_ = 0;
  std::string client_ip_;
  // Filter checks started before the message (null: none): the client's
  // DNSBL lookup from the connect stage, SPF from the MAIL stage of
  // transaction number spf_transaction_.
  std::shared_ptr<filter::PendingResult<filter::Findings>> client_dnsbl_;
  std::shared_ptr<filter::PendingResult<sender_auth::SpfVerdict>> mail_from_spf_;
  std::uint64_t spf_transaction_ = 0;
  void start_mail_stage_checks();
  std::string tls_failure_;
  smtp::Session session_;
  std::unique_ptr<char[]> read_buffer_;
};

}  // namespace mxgate::server
