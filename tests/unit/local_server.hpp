// A Unix-socket server for tests of clients against peers that misbehave
// on purpose (no real clamd or milter hangs or answers garbage on demand):
// accepts until the io_context stops, runs handler on each connection in
// its own coroutine, and counts the connections.
#pragma once

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <filesystem>
#include <functional>

namespace mxgate::test_support {

class LocalServer {
 public:
  using Socket = asio::local::stream_protocol::socket;
  using Handler = std::function<asio::awaitable<void>(Socket)>;

  LocalServer(asio::io_context& io, const std::filesystem::path& path, Handler handler)
      : acceptor_(io, asio::local::stream_protocol::endpoint(path.string())), handler_(std::move(handler)) {
    asio::co_spawn(io, serve(), asio::detached);
  }
  int accepted() const { return accepted_; }

 private:
  asio::awaitable<void> serve() {
    for (;;) {
      asio::error_code ec;
      Socket socket = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      ++accepted_;
      asio::co_spawn(acceptor_.get_executor(), handler_(std::move(socket)), asio::detached);
    }
  }

  asio::local::stream_protocol::acceptor acceptor_;
  Handler handler_;
  int accepted_ = 0;
};

}  // namespace mxgate::test_support
