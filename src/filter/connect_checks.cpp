#include "filter/connect_checks.hpp"

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

namespace mxgate::filter {

ConnectChecks::ConnectChecks(const asio::any_io_executor& executor)
    : ready_(executor, asio::steady_timer::time_point::max()) {}

asio::awaitable<Findings> ConnectChecks::findings() {
  // The wait ends with complete()'s cancel, or with the waiter's own
  // cancellation (the time budget), which then discards what we return.
  if (!done_) {
    asio::error_code ec;
    co_await ready_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return findings_;
}

void ConnectChecks::complete(Findings findings) {
  if (done_) return;
  findings_ = std::move(findings);
  done_ = true;
  ready_.cancel();
}

}  // namespace mxgate::filter
