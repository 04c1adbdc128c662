// Runs one coroutine on an io_context to completion, bounded, the way the
// gateway runs its clients: for unit tests of coroutine code.
#pragma once

#include <gtest/gtest.h>

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <chrono>
#include <exception>
#include <optional>

namespace mxgate::test_support {

// The coroutine's result, or nullopt (with a test failure) when it threw or
// did not finish within bound.  Fake servers may keep io busy forever, hence
// the stop() when the coroutine ends.
template <class T>
std::optional<T> run(asio::io_context& io, asio::awaitable<T> op,
                     std::chrono::seconds bound = std::chrono::seconds(60)) {
  std::optional<T> out;
  bool threw = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        out.emplace(co_await std::move(op));
        io.stop();
      },
      [&](std::exception_ptr e) {
        if (e) {
          threw = true;
          io.stop();
        }
      });
  io.restart();
  io.run_for(bound);
  EXPECT_FALSE(threw) << "an exception escaped";
  EXPECT_TRUE(out.has_value()) << "did not finish within " << bound.count() << " s";
  return out;
}

}  // namespace mxgate::test_support
