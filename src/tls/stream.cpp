#include "tls/stream.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <asio/error.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <cstdint>

#include "tls/server_context.hpp"

namespace mxgate::tls {
namespace {

enum Progress { kDone = 0, kWantRead = 1, kWantWrite = 2, kFailed = -1 };

// A socket BIO of our own, for two reasons.
// - It sends with MSG_NOSIGNAL and MSG_DONTWAIT.  OpenSSL's socket BIO uses
//   write(2), which raises SIGPIPE when the peer has gone: a library must not
//   be able to kill the process that hosts it (the tools do not ignore
//   SIGPIPE).  MSG_DONTWAIT spares an ioctl(FIONBIO) per connection.
// - It gathers records.  OpenSSL hands over one TLS record (at most 16 KiB
//   of plaintext) per BIO_write, so a 64 KiB piece of a message was four
//   send(2) calls and four loopback segments; now it is two.  Records are
//   appended to BioState::out (up to kGather bytes) and sent together on
//   the next BIO_flush, which Stream calls at the end of every write and
//   which OpenSSL calls at the end of every handshake flight.  The buffer
//   is released as soon as it is empty, so an idle connection keeps none.
//   One flush is held back: the server's TLS 1.3 NewSessionTicket, written
//   after the client's Finished, goes out with the first reply (or before
//   the first wait for input) instead of in a segment of its own; the
//   client needs it only for a later connection.

// Three full records: below the 64 KiB at which glibc's free(3) consolidates
// its heap (the buffer is freed whenever it empties).
constexpr std::size_t kGather = 3 * (SSL3_RT_MAX_PLAIN_LENGTH + 256);

BioState* state_of(BIO* bio) { return static_cast<BioState*>(BIO_get_data(bio)); }

bool retryable(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

// Sends what is pending: 1 when all of it went out, 0 when the socket is full
// (retry flag set), -1 on an error (errno set).
int send_pending(BIO* bio, BioState& st) {
  while (st.sent < st.out.size()) {
    const ssize_t n =
        ::send(st.fd, st.out.data() + st.sent, st.out.size() - st.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (!retryable(errno)) return -1;
      BIO_set_retry_write(bio);
      return 0;
    }
    st.sent += static_cast<std::size_t>(n);
  }
  std::string().swap(st.out);
  st.sent = 0;
  return 1;
}

int bio_write(BIO* bio, const char* data, int size) {
  BIO_clear_retry_flags(bio);
  BioState& st = *state_of(bio);
  const auto length = static_cast<std::size_t>(size);
  if (st.out.size() - st.sent + length > kGather) {
    // Full: make room by sending what waits (OpenSSL retries this very
    // write once the socket drains; a record never exceeds kGather).
    if (send_pending(bio, st) <= 0) return -1;
  }
  // A full record announces more (a message's content): room for a whole
  // gather at once.  Short replies grow the buffer only as far as they need.
  if (st.out.capacity() == 0 && length >= SSL3_RT_MAX_PLAIN_LENGTH) st.out.reserve(kGather);
  st.out.append(data, length);
  return size;
}

int bio_read(BIO* bio, char* data, int size) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::recv(state_of(bio)->fd, data, static_cast<std::size_t>(size), MSG_DONTWAIT);
  if (n < 0 && retryable(errno)) BIO_set_retry_read(bio);
  return static_cast<int>(n);
}

long bio_ctrl(BIO* bio, int command, long, void*) {
  switch (command) {
    case BIO_CTRL_FLUSH: {
      BIO_clear_retry_flags(bio);
      BioState& st = *state_of(bio);
      if (st.ssl != nullptr && SSL_get_state(st.ssl) == TLS_ST_SW_SESSION_TICKET) return 1;
      return send_pending(bio, st) > 0 ? 1 : 0;
    }
    case BIO_CTRL_WPENDING: {
      const BioState& st = *state_of(bio);
      return static_cast<long>(st.out.size() - st.sent);
    }
    default:
      return 0;
  }
}

// Made once and never changed: shared read-only by every stream.
const BIO_METHOD* gathering_socket_method() {
  static const BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mxgate socket");
    if (m == nullptr) return static_cast<BIO_METHOD*>(nullptr);
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    return m;
  }();
  return method;
}

BIO* socket_bio(BioState& state) {
  const BIO_METHOD* method = gathering_socket_method();
  if (method == nullptr) return nullptr;
  BIO* bio = BIO_new(method);
  if (bio == nullptr) return nullptr;
  BIO_set_data(bio, &state);
  BIO_set_init(bio, 1);
  return bio;
}

}  // namespace

Stream::Stream(asio::ip::tcp::socket& socket, SSL_CTX* context, Role role)
    : socket_(socket), bio_state_{socket.native_handle(), nullptr, {}, 0}, ssl_(SSL_new(context)) {
  if (!ssl_) return;
  // OpenSSL does the reads and writes, with MSG_DONTWAIT: they never block
  // the event loop.
  BIO* bio = socket_bio(bio_state_);
  if (bio == nullptr) {
    ssl_.reset();
    return;
  }
  SSL_set_bio(ssl_.get(), bio, bio);  // one reference, owned by the SSL from here
  bio_state_.ssl = ssl_.get();
  // Partial writes let write_all() own the loop; the buffer never moves
  // between retries, but OpenSSL need not check that.
  SSL_set_mode(ssl_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // One recv() for whatever has arrived instead of two per record (header,
  // then body).  Everything on the socket after the handshake starts is TLS,
  // so reading ahead can swallow nothing that belongs to someone else.
  SSL_set_read_ahead(ssl_.get(), 1);
  if (role == Role::server) {
    SSL_set_accept_state(ssl_.get());
  } else {
    SSL_set_connect_state(ssl_.get());
  }
}

int Stream::classify(int result, std::error_code& ec) {
  switch (SSL_get_error(ssl_.get(), result)) {
    case SSL_ERROR_NONE:
      return kDone;
    case SSL_ERROR_WANT_READ:
      return kWantRead;
    case SSL_ERROR_WANT_WRITE:
      return kWantWrite;
    case SSL_ERROR_ZERO_RETURN:
      ec = asio::error::eof;
      return kFailed;
    case SSL_ERROR_SYSCALL: {
      const int err = errno;
      failure_ = last_error_text();
      // No errno and nothing queued: the peer closed without close_notify.
      ec = err != 0 ? std::error_code(err, std::system_category()) : std::error_code(asio::error::eof);
      return kFailed;
    }
    case SSL_ERROR_SSL:
      if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        ec = asio::error::eof;
        return kFailed;
      }
      failure_ = last_error_text();
      ec = std::make_error_code(std::errc::protocol_error);
      return kFailed;
    default:
      failure_ = last_error_text();
      ec = std::make_error_code(std::errc::protocol_error);
      return kFailed;
  }
}

asio::awaitable<std::error_code> Stream::wait(int what) {
  asio::error_code ec;
  const auto type = what == kWantRead ? asio::socket_base::wait_read : asio::socket_base::wait_write;
  co_await socket_.async_wait(type, asio::redirect_error(asio::use_awaitable, ec));
  co_return ec;
}

asio::awaitable<std::error_code> Stream::handshake() {
  if (!ssl_) co_return std::make_error_code(std::errc::not_enough_memory);
  for (;;) {
    std::error_code ec;
    // The error queue is per thread and shared by every connection on it.
    ERR_clear_error();
    const int progress = classify(SSL_do_handshake(ssl_.get()), ec);
    if (progress == kDone || progress == kFailed) co_return ec;
    if (ec = co_await wait(progress); ec) co_return ec;
  }
}

asio::awaitable<std::error_code> Stream::flush() {
  for (;;) {
    BIO* bio = SSL_get_wbio(ssl_.get());
    BIO_clear_retry_flags(bio);
    const int r = send_pending(bio, bio_state_);
    if (r > 0) co_return std::error_code();
    if (r < 0) co_return std::error_code(errno, std::system_category());
    if (auto ec = co_await wait(kWantWrite); ec) co_return ec;
  }
}

asio::awaitable<std::size_t> Stream::read_some(char* buffer, std::size_t size, std::error_code& ec) {
  ec.clear();
  for (;;) {
    std::size_t n = 0;
    ERR_clear_error();
    const int progress = classify(SSL_read_ex(ssl_.get(), buffer, size, &n), ec);
    if (progress == kDone) co_return n;
    if (progress == kFailed) co_return 0;
    // Before waiting for the peer, whatever it may be waiting for: a held
    // session ticket, or what a read made OpenSSL write (a KeyUpdate answer).
    if (bio_state_.waiting() && (ec = co_await flush())) co_return 0;
    if (ec = co_await wait(progress); ec) co_return 0;
  }
}

asio::awaitable<std::error_code> Stream::write_all(std::string_view bytes, Then then) {
  while (!bytes.empty()) {
    std::size_t n = 0;
    std::error_code ec;
    ERR_clear_error();
    const int progress = classify(SSL_write_ex(ssl_.get(), bytes.data(), bytes.size(), &n), ec);
    if (progress == kFailed) co_return ec;
    if (progress == kDone) {
      bytes.remove_prefix(n);
      continue;
    }
    if (ec = co_await wait(progress); ec) co_return ec;
  }
  if (then == Then::close_notify) {
    // Into the same segment as the last reply.
    ERR_clear_error();
    SSL_shutdown(ssl_.get());
    ERR_clear_error();
  }
  co_return co_await flush();
}

bool Stream::try_write(std::string_view bytes) {
  if (!ssl_ || !SSL_is_init_finished(ssl_.get())) return false;
  std::size_t n = 0;
  ERR_clear_error();
  const bool ok = SSL_write_ex(ssl_.get(), bytes.data(), bytes.size(), &n) == 1 && n == bytes.size() &&
                  BIO_flush(SSL_get_wbio(ssl_.get())) == 1;
  ERR_clear_error();
  return ok;
}

void Stream::close_notify() {
  if (!ssl_ || !SSL_is_init_finished(ssl_.get()) || (SSL_get_shutdown(ssl_.get()) & SSL_SENT_SHUTDOWN)) return;
  ERR_clear_error();
  SSL_shutdown(ssl_.get());
  BIO_flush(SSL_get_wbio(ssl_.get()));
  ERR_clear_error();
}

}  // namespace mxgate::tls
