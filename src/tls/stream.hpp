// TLS over a connected Asio TCP socket, with OpenSSL reading and writing the
// socket itself (through a socket BIO) and Asio only waiting for readiness.
//
// Why not asio::ssl::stream: it runs OpenSSL against a BIO pair and keeps
// its own input and output buffers, about 68 KiB per connection for as long
// as the connection lives, and copies every record twice.  Here OpenSSL's
// record buffers are the only ones, and SSL_MODE_RELEASE_BUFFERS (set on our
// contexts) gives them back whenever the connection is idle, so an idle TLS
// session costs the SSL object and little else (issue 4: at most 64 KiB per
// idle TLS connection).
//
// Plaintext read before the handshake is never seen here: the caller owns
// that buffer and discards it (RFC 3207 section 6, CVE-2011-0411); anything
// still in the kernel's receive queue is fed to the handshake, where it can
// only make the handshake fail.
//
// Cancelling the socket (socket.cancel(), as the connection watchdogs do)
// aborts a pending wait; the operation then fails with operation_aborted.
#pragma once

#include <openssl/ssl.h>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace mxgate::tls {

struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using UniqueSsl = std::unique_ptr<SSL, SslFree>;

// What the socket BIO of a Stream keeps: the descriptor, and records
// gathered for one send(2) (see stream.cpp).
struct BioState {
  int fd = -1;
  const SSL* ssl = nullptr;  // whose handshake state tells a ticket's flush
  std::string out;        // gathered records; empty (no storage) when nothing waits
  std::size_t sent = 0;   // bytes of out already sent
  bool waiting() const { return sent < out.size(); }
};

class Stream {
 public:
  enum class Role { client, server };

  // Takes ownership of nothing but the SSL object; socket must outlive the
  // stream.  Fails only when OpenSSL cannot allocate.
  Stream(asio::ip::tcp::socket& socket, SSL_CTX* context, Role role);

  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // For per-connection settings (SNI, DANE, verification) before handshake().
  SSL* native_handle() const { return ssl_.get(); }
  bool valid() const { return ssl_ != nullptr; }

  asio::awaitable<std::error_code> handshake();

  // At least one byte into buffer, or an error (eof when the peer closed,
  // cleanly or not).
  asio::awaitable<std::size_t> read_some(char* buffer, std::size_t size, std::error_code& ec);

  // With Then::close_notify, the close_notify alert follows bytes in the
  // same send (the last reply of a session).
  enum class Then { keep_open, close_notify };
  asio::awaitable<std::error_code> write_all(std::string_view bytes, Then then = Then::keep_open);

  // Best effort, never waits: writes what the socket takes at once (a QUIT
  // to a parked connection).  True if all of bytes went out.
  bool try_write(std::string_view bytes);

  // Sends the records OpenSSL has written but the socket has not taken yet.
  // write_all() and read_some() do it themselves.
  asio::awaitable<std::error_code> flush();

  // Sends close_notify if the socket takes it at once; never waits.
  void close_notify();

  // What OpenSSL said about the last failure (its error queue, cleared).
  const std::string& failure() const { return failure_; }

 private:
  // Maps an SSL_* result to: 0 = done, 1 = wait for readable, 2 = wait for
  // writable, -1 = failed (ec set).
  int classify(int result, std::error_code& ec);
  asio::awaitable<std::error_code> wait(int what);

  asio::ip::tcp::socket& socket_;
  BioState bio_state_;  // outlives ssl_, whose BIO points at it
  UniqueSsl ssl_;
  std::string failure_;
};

}  // namespace mxgate::tls
