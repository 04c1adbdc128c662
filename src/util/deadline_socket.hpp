// A stream socket to a local service (clamd, a milter) under one deadline,
// shared by the clients in src/filter/clamd_client.cpp and
// src/milter/client.cpp.  When the deadline passes the socket is closed, so
// whatever the coroutine awaits ends with an error and expired() is true;
// the deadline may be moved (a milter's SMFIR_PROGRESS).
//
// The timer's handler can run after the coroutine that owned the socket has
// ended (its success already queued), so socket, timer and read buffer live
// in a state the handler keeps alive itself.  The read buffer is kept there,
// off the coroutine frame, also because GCC 12 gives a false
// -Wmismatched-new-delete on frames larger than Asio's frame recycling
// serves.  Runs on one executor that does not run the coroutine and the
// timer at once (a single-threaded io_context or a strand).
#pragma once

#include <algorithm>
#include <array>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/generic/stream_protocol.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "util/result.hpp"

namespace mxgate {

// The longest Unix socket path (struct sockaddr_un's sun_path less its NUL).
inline constexpr std::size_t kMaxUnixSocketPath = 107;

// A decimal port 1..65535 as written in an endpoint ("tcp:host:PORT").
inline Result<std::uint16_t> parse_port(std::string_view text) {
  unsigned value = 0;
  const bool digits = !text.empty() && text.size() <= 5 &&
                      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) std::from_chars(text.data(), text.data() + text.size(), value);
  if (!digits || value == 0 || value > 65535) return make_error("the port must be a number 1..65535");
  return static_cast<std::uint16_t>(value);
}

// A Unix socket path or an IP literal and port as an endpoint; errors read
// "<what>: bad socket path" / "<what>: not an IP address and port" (asio's
// local endpoint would throw on an overlong path: checked first).
inline Result<asio::generic::stream_protocol::endpoint> stream_endpoint(bool unix_socket, const std::string& path,
                                                                        const std::string& host, std::uint16_t port,
                                                                        const std::string& what) {
  if (unix_socket) {
    if (path.empty() || path.size() > kMaxUnixSocketPath || path.find('\0') != std::string::npos)
      return make_error(what + ": bad socket path");
    return asio::generic::stream_protocol::endpoint(asio::local::stream_protocol::endpoint(path));
  }
  asio::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec || port == 0) return make_error(what + ": not an IP address and port");
  return asio::generic::stream_protocol::endpoint(asio::ip::tcp::endpoint(address, port));
}

template <std::size_t kBufferSize>
class DeadlineSocket {
 public:
  using Clock = std::chrono::steady_clock;

  DeadlineSocket(const asio::any_io_executor& executor, Clock::time_point deadline)
      : state_(std::make_shared<State>(executor)) {
    state_->deadline = deadline;
    watch(state_);
  }
  ~DeadlineSocket() {
    state_->finished = true;
    state_->timer.cancel();
    asio::error_code ignored;
    state_->socket.close(ignored);
  }
  DeadlineSocket(const DeadlineSocket&) = delete;
  DeadlineSocket& operator=(const DeadlineSocket&) = delete;

  bool expired() const { return state_->expired; }
  Clock::time_point deadline() const { return state_->deadline; }
  // A later deadline takes effect when the current one would have passed.
  void set_deadline(Clock::time_point deadline) { state_->deadline = deadline; }

  // Connects; TCP_NODELAY on IP endpoints (requests and replies are small).
  asio::awaitable<asio::error_code> connect(const asio::generic::stream_protocol::endpoint& endpoint) {
    asio::error_code ec;
    co_await state_->socket.async_connect(endpoint, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec && endpoint.protocol().family() != AF_UNIX) {
      asio::error_code ignored;
      state_->socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    }
    co_return ec;
  }

  // Writes all of buffers (a buffer sequence).
  template <class Buffers>
  asio::awaitable<asio::error_code> write(const Buffers& buffers) {
    asio::error_code ec;
    co_await asio::async_write(state_->socket, buffers, asio::redirect_error(asio::use_awaitable, ec));
    co_return ec;
  }

  // Some bytes (valid until the next read), or an error (eof included).
  asio::awaitable<std::pair<std::string_view, asio::error_code>> read_some() {
    asio::error_code ec;
    const std::size_t n = co_await state_->socket.async_read_some(asio::buffer(state_->buffer),
                                                                   asio::redirect_error(asio::use_awaitable, ec));
    co_return std::pair{std::string_view(state_->buffer.data(), n), ec};
  }

 private:
  struct State {
    explicit State(const asio::any_io_executor& executor) : socket(executor), timer(executor) {}
    asio::generic::stream_protocol::socket socket;
    asio::steady_timer timer;
    Clock::time_point deadline;
    bool expired = false;
    bool finished = false;
    std::array<char, kBufferSize> buffer{};
  };

  // Waits for the deadline; one that moved later re-arms the timer.
  static void watch(const std::shared_ptr<State>& state) {
    state->timer.expires_at(state->deadline);
    state->timer.async_wait([state](const asio::error_code& ec) {
      if (ec || state->finished) return;
      if (Clock::now() < state->deadline) {
        watch(state);
        return;
      }
      state->expired = true;
      asio::error_code ignored;
      state->socket.close(ignored);
    });
  }

  std::shared_ptr<State> state_;
};

}  // namespace mxgate
