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

// A socket BIO that sends with MSG_NOSIGNAL.  OpenSSL's own socket BIO uses
// write(2), which raises SIGPIPE when the peer has gone: a library must not
// be able to kill the process that hosts it (the tools do not ignore SIGPIPE).
int socket_of(BIO* bio) { return static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(bio))); }

bool retryable(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

int bio_write(BIO* bio, const char* data, int size) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::send(socket_of(bio), data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
  if (n < 0 && retryable(errno)) BIO_set_retry_write(bio);
  return static_cast<int>(n);
}

int bio_read(BIO* bio, char* data, int size) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::recv(socket_of(bio), data, static_cast<std::size_t>(size), 0);
  if (n < 0 && retryable(errno)) BIO_set_retry_read(bio);
  return static_cast<int>(n);
}

long bio_ctrl(BIO*, int command, long, void*) {
  // Writes go straight to the socket, so there is never anything to flush.
  return command == BIO_CTRL_FLUSH ? 1 : 0;
}

// Made once and never changed: shared read-only by every stream.
const BIO_METHOD* nosignal_socket_method() {
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

BIO* socket_bio(int fd) {
  const BIO_METHOD* method = nosignal_socket_method();
  if (method == nullptr) return nullptr;
  BIO* bio = BIO_new(method);
  if (bio == nullptr) return nullptr;
  BIO_set_data(bio, reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)));
  BIO_set_init(bio, 1);
  return bio;
}

}  // namespace

Stream::Stream(asio::ip::tcp::socket& socket, SSL_CTX* context, Role role)
    : socket_(socket), ssl_(SSL_new(context)) {
  if (!ssl_) return;
  asio::error_code ec;
  // OpenSSL does the reads and writes; they must never block the event loop.
  socket_.non_blocking(true, ec);
  BIO* bio = ec ? nullptr : socket_bio(socket_.native_handle());
  if (bio == nullptr) {
    ssl_.reset();
    return;
  }
  SSL_set_bio(ssl_.get(), bio, bio);  // one reference, owned by the SSL from here
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

asio::awaitable<std::size_t> Stream::read_some(char* buffer, std::size_t size, std::error_code& ec) {
  ec.clear();
  for (;;) {
    std::size_t n = 0;
    ERR_clear_error();
    const int progress = classify(SSL_read_ex(ssl_.get(), buffer, size, &n), ec);
    if (progress == kDone) co_return n;
    if (progress == kFailed) co_return 0;
    if (ec = co_await wait(progress); ec) co_return 0;
  }
}

asio::awaitable<std::error_code> Stream::write_all(std::string_view bytes) {
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
  co_return std::error_code();
}

bool Stream::try_write(std::string_view bytes) {
  if (!ssl_ || !SSL_is_init_finished(ssl_.get())) return false;
  std::size_t n = 0;
  ERR_clear_error();
  const bool ok = SSL_write_ex(ssl_.get(), bytes.data(), bytes.size(), &n) == 1 && n == bytes.size();
  ERR_clear_error();
  return ok;
}

void Stream::close_notify() {
  if (!ssl_ || !SSL_is_init_finished(ssl_.get())) return;
  ERR_clear_error();
  SSL_shutdown(ssl_.get());
  ERR_clear_error();
}

}  // namespace mxgate::tls
