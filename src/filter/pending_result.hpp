// A check's result that is computed early and read later: the checks that
// need only the client start when it connects (its DNSBL listing), those
// that need the envelope sender start when MAIL is accepted (SPF); they run
// while the SMTP dialogue goes on (RFC 5321 section 3.1: EHLO, MAIL, RCPT
// and the message itself take several round trips), and each message's
// verdict at the end of DATA/BDAT reads them, waiting only for what is
// still running, within the verdict's time budget (Scanner::examine).
//
// Single-threaded: producer and readers run on the connection's executor.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace mxgate::filter {

template <class T>
class PendingResult {
 public:
  explicit PendingResult(const asio::any_io_executor& executor)
      : ready_(executor, asio::steady_timer::time_point::max()) {}

  // The result; waits until it is there.  The wait ends with complete()'s
  // cancel, or with the reader's own cancellation (the time budget), which
  // then discards what is returned.
  asio::awaitable<T> get() {
    if (!done_) {
      asio::error_code ec;
      co_await ready_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return value_;
  }

  // Sets the result and wakes whoever waits.  Once.
  void complete(T value) {
    if (done_) return;
    value_ = std::move(value);
    done_ = true;
    ready_.cancel();
  }

  bool done() const { return done_; }

 private:
  bool done_ = false;
  T value_{};
  asio::steady_timer ready_;  // never expires: cancelled by complete()
};

}  // namespace mxgate::filter
