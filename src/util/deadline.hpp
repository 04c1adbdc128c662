// One deadline per connection, enforced by a watchdog coroutine: when it
// passes, every pending operation on the socket is cancelled (and fails with
// operation_aborted) and expired() turns true.  RFC 5321 section 4.5.3.2
// asks for a timeout on every wait; re-arming per wait is one assignment,
// because a later deadline needs no wake-up (the watchdog re-reads it when
// the timer it set fires) and only an earlier one interrupts the timer.
// Used by the server connection and the relay client alike.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>

namespace mxgate {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Deadline(const asio::any_io_executor& executor) : timer_(executor) {}

  void arm_at(Clock::time_point when) {
    deadline_ = when;
    if (deadline_ < armed_) timer_.cancel();
  }
  void arm(Clock::duration timeout) { arm_at(Clock::now() + timeout); }
  Clock::time_point at() const { return deadline_; }

  bool expired() const { return expired_; }
  void clear_expired() { expired_ = false; }
  bool stopped() const { return stopped_; }

  // Ends watch(); the owner calls it when the connection is finished.
  void stop() {
    stopped_ = true;
    timer_.cancel();
  }

  // Runs until stop().  The caller keeps the socket (and this) alive for as
  // long, typically by holding a shared_ptr to its owner across the co_await.
  asio::awaitable<void> watch(asio::ip::tcp::socket& socket) {
    while (!stopped_) {
      armed_ = deadline_;
      timer_.expires_at(armed_);
      asio::error_code ec;
      co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopped_) break;
      if (Clock::now() >= deadline_) {
        expired_ = true;
        deadline_ = Clock::time_point::max();
        socket.cancel(ec);
      }
    }
  }

 private:
  asio::steady_timer timer_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point armed_ = Clock::time_point::max();  // what the timer waits for
  bool expired_ = false;
  bool stopped_ = false;
};

}  // namespace mxgate
