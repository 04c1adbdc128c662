// The SMTP client's coroutine shell: sockets, deadlines and OpenSSL around
// the pure SmtpClientSession (src/delivery/smtp_client_session.hpp), in the
// shape of src/server/connection.cpp.  It connects, reads replies into the
// ReplyParser, feeds them to the session, writes what the session says, and
// performs STARTTLS with the TLS requirement's policy:
//   opportunistic  no verification; a failed handshake is retried once on a
//                  new connection in cleartext (Postfix "may")
//   encrypt        no verification
//   verify         SSL_set1_host + SSL_VERIFY_PEER, system trust store
//   dane           SSL_dane_enable + SSL_dane_tlsa_add per usable record,
//                  DANE_FLAG_NO_DANE_EE_NAMECHECKS (RFC 7672 3.1.1),
//                  SSL_VERIFY_PEER; no PKIX trust store is loaded, so only
//                  TLSA records can authenticate the peer
// Every wait has a deadline (RFC 5321 4.5.3.2 via ClientSettings): a
// watchdog coroutine cancels the socket when the deadline passes.
#include "delivery/smtp_client.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ssl/context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "delivery/data_framer.hpp"
#include "delivery/smtp_client_session.hpp"
#include "delivery/smtp_reply_parser.hpp"
#include "tls/server_context.hpp"
#include "tls/stream.hpp"
#include "util/deadline.hpp"
#include "util/log.hpp"

namespace mxgate::delivery {
namespace {

using Clock = std::chrono::steady_clock;
using Mode = TlsRequirement::Mode;

// Replies are small; a long EHLO reply or a pipelined group fits easily.
constexpr std::size_t kReadBufferSize = 16 * 1024;
// Content is written in pieces of this size, each with data_block_timeout.
constexpr std::size_t kContentWriteSize = 64 * 1024;
// The results are final before QUIT; its reply is not worth a long wait.
constexpr std::chrono::seconds kQuitTimeout{10};

// ---------------------------------------------------------------------------
// TLS contexts: one per kind, made on first use and kept (SSL_CTX is
// thread-safe for creating SSL objects).

enum class ContextKind { unauthenticated, pkix, dane };

ContextKind context_kind(Mode mode) {
  if (mode == Mode::verify) return ContextKind::pkix;
  if (mode == Mode::dane) return ContextKind::dane;
  return ContextKind::unauthenticated;
}

Result<std::shared_ptr<asio::ssl::context>> make_client_context(ContextKind kind) {
  ERR_clear_error();
  std::shared_ptr<asio::ssl::context> context;
  try {
    context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  } catch (const std::exception& e) {
    return make_error(std::string("SSL_CTX_new: ") + e.what());
  }
  SSL_CTX* ctx = context->native_handle();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
    return make_error("TLS 1.2 minimum: " + tls::last_error_text());
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  switch (kind) {
    case ContextKind::unauthenticated:
      break;
    case ContextKind::pkix:
      if (SSL_CTX_set_default_verify_paths(ctx) != 1)
        return make_error("system trust store: " + tls::last_error_text());
      break;
    case ContextKind::dane:
      if (SSL_CTX_dane_enable(ctx) <= 0) return make_error("SSL_CTX_dane_enable: " + tls::last_error_text());
      break;
  }
  return context;
}

Result<std::shared_ptr<asio::ssl::context>> client_context(ContextKind kind) {
  static std::mutex mutex;
  static std::map<ContextKind, std::shared_ptr<asio::ssl::context>> contexts;
  std::lock_guard lock(mutex);
  if (auto it = contexts.find(kind); it != contexts.end()) return it->second;
  auto made = make_client_context(kind);
  if (made) contexts.emplace(kind, *made);
  return made;
}

bool is_ip_literal(const std::string& host) {
  asio::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

SmtpClientSession::TlsUse tls_use(Mode mode) {
  switch (mode) {
    case Mode::cleartext:
      return SmtpClientSession::TlsUse::none;
    case Mode::opportunistic:
      return SmtpClientSession::TlsUse::opportunistic;
    case Mode::encrypt:
    case Mode::verify:
    case Mode::dane:
      break;
  }
  return SmtpClientSession::TlsUse::required;
}

// ---------------------------------------------------------------------------
// One connection attempt.

// The peer as local replies name it: the MX host, or the address for a bare IP.
std::string server_name(const asio::ip::tcp::endpoint& server, const TlsRequirement& tls) {
  return tls.host.empty() ? server.address().to_string() : tls.host;
}

std::string endpoint_text(const asio::ip::tcp::endpoint& server) {
  const std::string address = server.address().to_string();
  const std::string port = std::to_string(server.port());
  return server.address().is_v6() ? "[" + address + "]:" + port : address + ":" + port;
}

std::string verify_error(long verify) {
  return verify == X509_V_ERR_DANE_NO_MATCH
             ? std::string("TLSA mismatch")
             : std::string("certificate verification failed: ") + X509_verify_cert_error_string(verify);
}

// mxgate probe: the handshake goes on whatever the chain; the result is
// read afterwards from SSL_get_verify_result (as posttls-finger does).
int accept_any(int, X509_STORE_CTX*) { return 1; }

std::string name_text(const X509_NAME* name) {
  if (name == nullptr) return "";
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) return "";
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string text(data != nullptr && size > 0 ? std::string(data, static_cast<std::size_t>(size)) : std::string());
  BIO_free(bio);
  return text;
}

std::string spki_sha256(X509* cert) {
  unsigned char* der = nullptr;
  const int length = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  if (length <= 0) return "";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  const bool ok = EVP_Digest(der, static_cast<std::size_t>(length), digest, &digest_length, EVP_sha256(), nullptr) == 1;
  OPENSSL_free(der);
  if (!ok) return "";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < digest_length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return hex;
}

void record_probe(ProbeResult& probe, SSL* ssl, Mode mode, long verify) {
  probe.tls = true;
  probe.tls_version = SSL_get_version(ssl);
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  probe.cipher = cipher ? SSL_CIPHER_get_name(cipher) : "unknown";
  if (X509* cert = SSL_get0_peer_certificate(ssl)) {
    probe.peer_subject = name_text(X509_get_subject_name(cert));
    probe.peer_issuer = name_text(X509_get_issuer_name(cert));
    probe.peer_spki_sha256 = spki_sha256(cert);
  }
  if (mode == Mode::verify) {
    probe.verification = verify == X509_V_OK ? std::string("PKIX verified") : verify_error(verify);
    return;
  }
  if (mode != Mode::dane) {
    probe.verification = "not attempted (unauthenticated TLS)";
    return;
  }
  std::uint8_t usage = 255;
  if (verify == X509_V_OK && SSL_get0_dane_authority(ssl, nullptr, nullptr) >= 0 &&
      SSL_get0_dane_tlsa(ssl, &usage, nullptr, nullptr, nullptr, nullptr) >= 0) {
    probe.dane_verified = true;
    probe.verification = usage == 3 ? "DANE-EE" : "DANE-TA";
  } else {
    probe.verification = verify != X509_V_OK ? verify_error(verify) : std::string("TLS peer not DANE-authenticated");
  }
}

}  // namespace

namespace client_detail {

struct Outcome {
  AttemptResult result;
  bool handshake_failed = false;  // the TLS handshake itself failed (not a policy refusal before it)
  bool parked = false;            // the connection is open and may be cached (no QUIT sent)
  bool stale = false;             // a reused connection was dead before any content was sent
};

class Attempt : public std::enable_shared_from_this<Attempt> {
 public:
  Attempt(const asio::any_io_executor& executor, const asio::ip::tcp::endpoint& server,
          const ClientSettings& settings, const TlsRequirement& tls, const queue::Envelope& envelope,
          const std::string& content, const std::vector<std::string>& recipients)
      : settings_(settings),
        tls_requirement_(tls),
        server_(server),
        socket_(executor),
        deadline_(executor),
        peer_(endpoint_text(server)),
        session_(SmtpClientSession::Settings{settings.helo_name, server_name(server, tls), tls_use(tls.mode)},
                 SmtpClientSession::Transaction{envelope.sender, recipients, envelope.smtputf8,
                                                envelope.body_8bitmime, content.size()},
                 content),
        read_buffer_(new char[kReadBufferSize]) {}

  asio::awaitable<Outcome> run();
  // Connection reuse: a new transaction on this parked connection.
  asio::awaitable<Outcome> reuse(const queue::Envelope& envelope, const std::string& content,
                                 const std::vector<std::string>& recipients);
  // When the transaction ends cleanly, keep the connection open (no QUIT).
  void allow_parking(bool allow) { may_park_ = allow; }
  bool closed() const { return deadline_.stopped() || deadline_.expired(); }
  // A parked connection's end: QUIT, its reply (or a timeout), close.
  asio::awaitable<void> quit_and_close();
  // The same without waiting, for when the event loop no longer runs.
  void close_now();
  // mxgate probe: fill *probe, stop before MAIL, complete DANE handshakes
  // whatever the verification result (it is reported, not enforced).
  void set_probe(ProbeResult* probe) {
    probe_ = probe;
    session_.stop_before_mail();
  }

 private:
  asio::awaitable<void> watchdog();
  void arm(Clock::duration timeout);
  asio::awaitable<bool> write_all(std::string_view bytes);
  asio::awaitable<bool> write_step(const SmtpClientSession::Step& step);
  asio::awaitable<std::optional<ServerReply>> read_reply(Clock::duration timeout);
  asio::awaitable<bool> handshake();
  Clock::duration timeout_for(SmtpClientSession::Wait wait) const;
  asio::awaitable<Outcome> converse(SmtpClientSession::Step& step);
  std::string io_error(const asio::error_code& ec) const;
  void finish();

  const ClientSettings settings_;        // copies: a parked connection outlives the caller's
  const TlsRequirement tls_requirement_;
  asio::ip::tcp::endpoint server_;
  asio::ip::tcp::socket socket_;
  std::shared_ptr<asio::ssl::context> tls_context_;  // outlives tls_
  std::unique_ptr<tls::Stream> tls_;                 // after STARTTLS
  Deadline deadline_;
  std::string peer_;  // "ip:port" for logs and errors
  SmtpClientSession session_;
  ReplyParser parser_;
  std::unique_ptr<char[]> read_buffer_;
  std::string io_failure_;  // why the last read or write failed
  std::string tls_summary_ = "cleartext";
  bool handshake_failed_ = false;
  ProbeResult* probe_ = nullptr;
  bool may_park_ = false;
  bool reused_ = false;
};

void Attempt::arm(Clock::duration timeout) { deadline_.arm(timeout); }

asio::awaitable<void> Attempt::watchdog() {
  auto self = shared_from_this();
  co_await deadline_.watch(socket_);
}

std::string Attempt::io_error(const asio::error_code& ec) const {
  if (deadline_.expired()) return "timeout";
  if (ec == asio::error::eof) return "connection closed";
  return ec.message();
}

Clock::duration Attempt::timeout_for(SmtpClientSession::Wait wait) const {
  switch (wait) {
    case SmtpClientSession::Wait::greeting:
      return settings_.greeting_timeout;
    case SmtpClientSession::Wait::command:
      return settings_.command_timeout;
    case SmtpClientSession::Wait::data_init:
      return settings_.data_init_timeout;
    case SmtpClientSession::Wait::data_end:
      return settings_.data_end_timeout;
    case SmtpClientSession::Wait::quit:
      return std::min<Clock::duration>(settings_.command_timeout, kQuitTimeout);
  }
  return settings_.command_timeout;
}

asio::awaitable<bool> Attempt::write_all(std::string_view bytes) {
  asio::error_code ec;
  if (tls_) {
    ec = co_await tls_->write_all(bytes);
  } else {
    co_await asio::async_write(socket_, asio::buffer(bytes), asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) io_failure_ = "write failed: " + io_error(ec);
  co_return !ec;
}

asio::awaitable<bool> Attempt::write_step(const SmtpClientSession::Step& step) {
  if (!step.content) {
    arm(settings_.command_timeout);
    const bool ok = co_await write_all(step.output);
    co_return ok;
  }
  DataFramer framer(session_.content());
  while (!framer.done()) {
    arm(settings_.data_block_timeout);  // RFC 5321 4.5.3.2.5: 3 minutes per block
    const std::string_view piece = framer.next(kContentWriteSize);
    if (!piece.empty() && !co_await write_all(piece)) co_return false;
  }
  co_return true;
}

asio::awaitable<std::optional<ServerReply>> Attempt::read_reply(Clock::duration timeout) {
  arm(timeout);
  while (!parser_.has_reply()) {
    if (parser_.failed()) {
      io_failure_ = "bad reply from server (" + std::string(to_string(parser_.error())) + ")";
      co_return std::nullopt;
    }
    asio::error_code ec;
    std::size_t n = 0;
    if (tls_) {
      n = co_await tls_->read_some(read_buffer_.get(), kReadBufferSize, ec);
    } else {
      n = co_await socket_.async_read_some(asio::buffer(read_buffer_.get(), kReadBufferSize),
                                           asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) {
      io_failure_ = io_error(ec);
      co_return std::nullopt;
    }
    parser_.feed(std::string_view(read_buffer_.get(), n));
  }
  co_return parser_.take();
}

asio::awaitable<bool> Attempt::handshake() {
  // RFC 3207 / response injection: nothing the server sent in cleartext
  // after its 220 may be read as a reply once TLS is up.  The parser holds
  // every byte read so far (the read buffer is always fed whole), so
  // dropping its buffer leaves the TLS stream a clean socket.
  if (const std::size_t dropped = parser_.discard(); dropped > 0)
    log_line("smtp client: server=" + peer_ + ": discarded " + std::to_string(dropped) +
             " bytes sent after the STARTTLS 220 (response injection)");

  auto context = client_context(context_kind(tls_requirement_.mode));
  if (!context) {
    session_.tls_failed("TLS setup failed: " + context.error());
    co_return false;
  }
  tls_context_ = *context;
  tls_ = std::make_unique<tls::Stream>(socket_, tls_context_->native_handle(), tls::Stream::Role::client);
  if (!tls_->valid()) {
    session_.tls_failed("TLS setup failed: " + tls::last_error_text());
    co_return false;
  }
  SSL* ssl = tls_->native_handle();
  const std::string& host = tls_requirement_.host;
  if (!host.empty() && !is_ip_literal(host)) SSL_set_tlsext_host_name(ssl, host.c_str());

  switch (tls_requirement_.mode) {
    case Mode::verify:
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (host.empty() || SSL_set1_host(ssl, host.c_str()) != 1) {
        session_.tls_failed("TLS setup failed: no host name to verify");
        co_return false;
      }
      SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
      break;
    case Mode::dane: {
      if (host.empty() || SSL_dane_enable(ssl, host.c_str()) <= 0) {
        session_.tls_failed("TLS setup failed: SSL_dane_enable: " + tls::last_error_text());
        co_return false;
      }
      SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
      int usable = 0;
      for (const auto& r : tls_requirement_.tlsa) {
        const int rc =
            SSL_dane_tlsa_add(ssl, r.usage, r.selector, r.matching_type, r.data.data(), r.data.size());
        if (rc > 0) ++usable;
      }
      ERR_clear_error();
      // Without a usable record OpenSSL would fall back to PKIX: refuse instead.
      if (usable == 0) {
        session_.tls_failed("no usable TLSA records");
        co_return false;
      }
      SSL_set_verify(ssl, SSL_VERIFY_PEER, probe_ ? accept_any : nullptr);
      break;
    }
    case Mode::cleartext:
    case Mode::opportunistic:
    case Mode::encrypt:
      SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
      break;
  }

  arm(settings_.tls_handshake_timeout);
  const std::error_code ec = co_await tls_->handshake();
  const long verify = SSL_get_verify_result(ssl);
  if (probe_ && !ec) record_probe(*probe_, ssl, tls_requirement_.mode, verify);
  const bool authenticated = tls_requirement_.mode == Mode::verify || tls_requirement_.mode == Mode::dane;
  if (ec) {
    std::string error;
    if (authenticated && verify != X509_V_OK) {
      error = verify_error(verify);
      ERR_clear_error();
    } else {
      error = "TLS handshake failed: " + io_error(ec);
      if (const auto& detail = tls_->failure(); !detail.empty() && detail != "unknown error")
        error += " (" + detail + ")";
      handshake_failed_ = true;
    }
    log_line("smtp client: server=" + peer_ + ": " + error);
    session_.tls_failed(error);
    co_return false;
  }

  std::string kind = "anonymous TLS";
  if (tls_requirement_.mode == Mode::dane) {
    std::uint8_t usage = 255;
    if (SSL_get0_dane_authority(ssl, nullptr, nullptr) < 0 ||
        SSL_get0_dane_tlsa(ssl, &usage, nullptr, nullptr, nullptr, nullptr) < 0 || verify != X509_V_OK) {
      session_.tls_failed(verify != X509_V_OK ? verify_error(verify) : std::string("TLS peer not DANE-authenticated"));
      co_return false;
    }
    kind = usage == 3 ? "verified TLS (DANE-EE)" : "verified TLS (DANE-TA)";
  } else if (tls_requirement_.mode == Mode::verify) {
    if (verify != X509_V_OK) {
      session_.tls_failed(std::string("certificate verification failed: ") +
                          X509_verify_cert_error_string(verify));
      co_return false;
    }
    kind = "trusted TLS";
  }
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  tls_summary_ = kind + " " + SSL_get_version(ssl) + " " + (cipher ? SSL_CIPHER_get_name(cipher) : "unknown");
  co_return true;
}

void Attempt::finish() {
  deadline_.stop();
  asio::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

asio::awaitable<Outcome> Attempt::run() {
  auto self = shared_from_this();
  asio::co_spawn(socket_.get_executor(), watchdog(), asio::detached);

  arm(settings_.connect_timeout);
  asio::error_code ec;
  co_await socket_.async_connect(server_, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    const std::string why = io_error(ec);
    finish();
    Outcome failed;
    failed.result.connection_failed = true;
    failed.result.error = "connect to " + peer_ + " failed: " + why;
    failed.result.tls_summary = "cleartext";
    co_return failed;
  }
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  if (probe_) probe_->connected = true;

  SmtpClientSession::Step step = session_.start();
  Outcome outcome = co_await converse(step);
  co_return outcome;
}

asio::awaitable<Outcome> Attempt::converse(SmtpClientSession::Step& step) {
  auto self = shared_from_this();
  bool parked = false;
  for (;;) {
    // Connection reuse: instead of QUIT, the connection is handed back open.
    if (may_park_ && session_.reusable() && !parser_.has_reply() && parser_.buffered() == 0 && !closed()) {
      parked = true;
      deadline_.arm_at(Clock::time_point::max());  // idle: the cache decides when it ends
      break;
    }
    if ((step.content || !step.output.empty()) && !co_await write_step(step)) {
      session_.connection_lost(io_failure_);
      break;
    }
    if (step.next == SmtpClientSession::Next::close) break;
    if (step.next == SmtpClientSession::Next::start_tls) {
      if (!co_await handshake()) break;
      step = session_.tls_established();
      continue;
    }
    const Clock::duration timeout = timeout_for(session_.waiting_for());
    std::optional<ServerReply> reply = co_await read_reply(timeout);
    if (!reply) {
      session_.connection_lost(io_failure_);
      break;
    }
    if (probe_ && probe_->greeting.empty()) probe_->greeting = reply->text();
    step = session_.on_reply(*reply);
    if (probe_ && !session_.tls_active()) probe_->starttls_offered = session_.extensions().starttls;
  }
  if (!parked) finish();

  Outcome outcome;
  outcome.result = session_.result();
  outcome.result.tls_summary = tls_summary_;
  outcome.handshake_failed = handshake_failed_;
  outcome.parked = parked;
  if (reused_ && !parked && !session_.content_sent()) {
    // A parked connection the server has closed (EOF, write error) or is
    // closing (421): nothing was delivered, so a new connection may try again.
    bool all_421 = !outcome.result.recipients.empty();
    for (const auto& r : outcome.result.recipients) all_421 = all_421 && r.code == 421;
    outcome.stale = outcome.result.connection_failed || all_421;
  }
  co_return outcome;
}

asio::awaitable<Outcome> Attempt::reuse(const queue::Envelope& envelope, const std::string& content,
                                        const std::vector<std::string>& recipients) {
  auto self = shared_from_this();
  const Extensions extensions = session_.extensions();
  const bool tls_active = session_.tls_active();
  session_ = SmtpClientSession(
      SmtpClientSession::Settings{settings_.helo_name, server_name(server_, tls_requirement_),
                                  tls_use(tls_requirement_.mode)},
      SmtpClientSession::Transaction{envelope.sender, recipients, envelope.smtputf8, envelope.body_8bitmime,
                                     content.size()},
      content);
  reused_ = true;
  io_failure_.clear();
  SmtpClientSession::Step step = session_.resume(extensions, tls_active);
  Outcome outcome = co_await converse(step);
  co_return outcome;
}

asio::awaitable<void> Attempt::quit_and_close() {
  auto self = shared_from_this();
  if (deadline_.stopped()) co_return;
  const std::string_view quit = "QUIT\r\n";
  const Clock::duration timeout = std::min<Clock::duration>(settings_.command_timeout, kQuitTimeout);
  arm(timeout);
  if (!closed() && co_await write_all(quit)) {
    std::optional<ServerReply> reply = co_await read_reply(timeout);
    (void)reply;
  }
  finish();
}

void Attempt::close_now() {
  if (deadline_.stopped()) return;
  const std::string_view quit = "QUIT\r\n";
  asio::error_code ec;
  if (tls_) {
    tls_->try_write(quit);
  } else {
    asio::write(socket_, asio::buffer(quit), ec);
  }
  finish();
}

}  // namespace client_detail

namespace {
using client_detail::Attempt;
using client_detail::Outcome;
}  // namespace

ConnectionCache::ConnectionCache(const asio::any_io_executor& executor, Clock::duration max_idle,
                                 std::size_t max_per_key)
    : max_idle_(max_idle), max_per_key_(max_per_key), timer_(executor) {}

ConnectionCache::~ConnectionCache() { close_all(); }

std::size_t ConnectionCache::size() const {
  std::size_t n = 0;
  for (const auto& [key, list] : entries_) n += list.size();
  return n;
}

std::shared_ptr<Attempt> ConnectionCache::take(const std::string& key) {
  const auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  std::shared_ptr<Attempt> found;
  const auto now = Clock::now();
  while (!found && !it->second.empty()) {
    Entry entry = std::move(it->second.back());
    it->second.pop_back();
    if (!entry.connection->closed() && entry.expires > now) {
      found = std::move(entry.connection);
    } else if (!entry.connection->closed()) {
      asio::co_spawn(timer_.get_executor(), entry.connection->quit_and_close(), asio::detached);
    }
  }
  if (it->second.empty()) entries_.erase(it);
  return found;
}

void ConnectionCache::park(const std::string& key, std::shared_ptr<Attempt> connection) {
  if (!connection || connection->closed()) return;
  auto& list = entries_[key];
  if (list.size() >= max_per_key_ || max_idle_ <= Clock::duration::zero()) {
    asio::co_spawn(timer_.get_executor(), connection->quit_and_close(), asio::detached);
    if (list.empty()) entries_.erase(key);
    return;
  }
  list.push_back(Entry{std::move(connection), Clock::now() + max_idle_});
  schedule_sweep();
}

void ConnectionCache::schedule_sweep() {
  if (timer_armed_) return;
  auto earliest = Clock::time_point::max();
  for (const auto& [key, list] : entries_)
    if (!list.empty()) earliest = std::min(earliest, list.front().expires);
  if (earliest == Clock::time_point::max()) return;
  timer_armed_ = true;
  timer_.expires_at(earliest);
  timer_.async_wait([this](const asio::error_code& ec) {
    if (ec == asio::error::operation_aborted) return;
    timer_armed_ = false;
    sweep();
  });
}

void ConnectionCache::sweep() {
  const auto now = Clock::now();
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto& list = it->second;
    while (!list.empty() && (list.front().expires <= now || list.front().connection->closed())) {
      if (!list.front().connection->closed())
        asio::co_spawn(timer_.get_executor(), list.front().connection->quit_and_close(), asio::detached);
      list.erase(list.begin());
    }
    it = list.empty() ? entries_.erase(it) : std::next(it);
  }
  schedule_sweep();
}

void ConnectionCache::close_all() {
  timer_armed_ = false;
  timer_.cancel();
  auto entries = std::move(entries_);
  entries_.clear();
  for (auto& [key, list] : entries)
    for (auto& entry : list) entry.connection->close_now();
}

std::string connection_cache_key(const asio::ip::tcp::endpoint& server, const TlsRequirement& tls) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string key = endpoint_text(server) + " mode=" + std::to_string(static_cast<int>(tls.mode)) +
                    " host=" + tls.host + " tlsa=";
  for (const auto& r : tls.tlsa) {
    key += std::to_string(r.usage) + "." + std::to_string(r.selector) + "." + std::to_string(r.matching_type) + ":";
    for (const std::uint8_t b : r.data) {
      key += kHex[b >> 4];
      key += kHex[b & 0xf];
    }
    key += ",";
  }
  return key;
}

asio::awaitable<AttemptResult> deliver_over_smtp(const asio::ip::tcp::endpoint& server,
                                                 const ClientSettings& settings, const TlsRequirement& tls,
                                                 const queue::Envelope& envelope, const std::string& content,
                                                 const std::vector<std::string>& recipients,
                                                 ConnectionCache* cache) {
  const auto executor = co_await asio::this_coro::executor;
  const std::string key = cache ? connection_cache_key(server, tls) : std::string();
  if (cache) {
    while (std::shared_ptr<Attempt> parked = cache->take(key)) {
      Outcome reused = co_await parked->reuse(envelope, content, recipients);
      if (reused.stale) {
        log_line("smtp client: server=" + endpoint_text(server) + ": cached connection unusable (" +
                 reused.result.error + "), connecting anew");
        continue;
      }
      if (reused.parked) cache->park(key, parked);
      co_return std::move(reused.result);
    }
  }
  auto attempt = std::make_shared<Attempt>(executor, server, settings, tls, envelope, content, recipients);
  attempt->allow_parking(cache != nullptr);
  Outcome outcome = co_await attempt->run();
  if (outcome.handshake_failed && tls.mode == Mode::opportunistic) {
    // Postfix "may": a failed handshake is retried in cleartext on a new connection.
    TlsRequirement cleartext = tls;
    cleartext.mode = Mode::cleartext;
    cleartext.tlsa.clear();
    log_line("smtp client: server=" + endpoint_text(server) +
             ": retrying in cleartext after: " + outcome.result.error);
    auto retry =
        std::make_shared<Attempt>(executor, server, settings, cleartext, envelope, content, recipients);
    retry->allow_parking(cache != nullptr);
    outcome = co_await retry->run();
    attempt = retry;
  }
  if (outcome.parked) cache->park(key, attempt);
  co_return std::move(outcome.result);
}

asio::awaitable<ProbeResult> probe_smtp(const asio::ip::tcp::endpoint& server, const ClientSettings& settings,
                                        const TlsRequirement& tls) {
  static const queue::Envelope kNoEnvelope{};
  static const std::string kNoContent;
  static const std::vector<std::string> kNoRecipients;
  const auto executor = co_await asio::this_coro::executor;
  ProbeResult probe;
  auto attempt = std::make_shared<Attempt>(executor, server, settings, tls, kNoEnvelope, kNoContent, kNoRecipients);
  attempt->set_probe(&probe);
  Outcome outcome = co_await attempt->run();
  probe.error = outcome.result.error;
  probe.tls_summary = outcome.result.tls_summary;
  if (!probe.tls && probe.verification.empty()) {
    if (tls.mode == Mode::dane && !probe.error.empty() && probe.connected)
      probe.verification = probe.error;
    else
      probe.verification = "not attempted (no TLS)";
  }
  co_return probe;
}

}  // namespace mxgate::delivery
