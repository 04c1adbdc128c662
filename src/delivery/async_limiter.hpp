// A counting limit for coroutines on one event loop (not thread-safe: use it
// from the loop's thread only).  acquire() suspends until a unit is free;
// release() hands the unit to the longest waiter, first come first served.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <cstddef>
#include <deque>
#include <memory>

namespace mxgate::delivery {

class AsyncLimiter {
 public:
  explicit AsyncLimiter(std::size_t limit) : limit_(limit) {}

  asio::awaitable<void> acquire() {
    if (in_use_ < limit_) {
      ++in_use_;
      co_return;
    }
    auto waiter = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor,
                                                       asio::steady_timer::time_point::max());
    waiters_.push_back(waiter);
    asio::error_code ec;
    co_await waiter->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    // Woken by release(), which handed its unit over.
  }

  void release() {
    if (!waiters_.empty()) {
      waiters_.front()->cancel();
      waiters_.pop_front();
      return;
    }
    --in_use_;
  }

  bool idle() const { return in_use_ == 0 && waiters_.empty(); }

 private:
  std::size_t limit_;
  std::size_t in_use_ = 0;
  std::deque<std::shared_ptr<asio::steady_timer>> waiters_;
};

}  // namespace mxgate::delivery
