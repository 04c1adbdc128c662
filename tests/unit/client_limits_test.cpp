// Per-client limits (Postfix anvil style): concurrency, connection rate and
// message rate per IP, at the limit and one past it, window expiry, and
// forgetting clients that left.
#include "server/client_limits.hpp"

#include <gtest/gtest.h>

namespace mxgate::server {
namespace {

using Clock = ClientLimits::Clock;
using namespace std::chrono_literals;

const Clock::time_point t0{};

TEST(ClientLimits, ConcurrentSessionsPerClient) {
  ClientLimits limits({.max_connections = 2});
  EXPECT_EQ(limits.connect("192.0.2.1", t0), ClientLimits::Admission::ok);
  EXPECT_EQ(limits.connect("192.0.2.1", t0), ClientLimits::Admission::ok);
  EXPECT_EQ(limits.connect("192.0.2.1", t0), ClientLimits::Admission::too_many_connections);
  EXPECT_EQ(limits.connect("192.0.2.2", t0), ClientLimits::Admission::ok);  // another client
  limits.disconnected("192.0.2.1", t0);
  EXPECT_EQ(limits.connect("192.0.2.1", t0), ClientLimits::Admission::ok);
}

TEST(ClientLimits, ConnectionRatePerMinute) {
  ClientLimits limits({.max_connections = 0, .max_connection_rate = 3});
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(limits.connect("192.0.2.1", t0 + i * 1s), ClientLimits::Admission::ok);
    limits.disconnected("192.0.2.1", t0 + i * 1s);
  }
  EXPECT_EQ(limits.connect("192.0.2.1", t0 + 59s), ClientLimits::Admission::connection_rate);
  // Refused attempts do not count; the window ends 60 s after it began.
  EXPECT_EQ(limits.connect("192.0.2.1", t0 + 60s), ClientLimits::Admission::ok);
}

TEST(ClientLimits, MessageRatePerMinute) {
  ClientLimits limits({.max_message_rate = 2});
  ASSERT_EQ(limits.connect("192.0.2.1", t0), ClientLimits::Admission::ok);
  EXPECT_TRUE(limits.message("192.0.2.1", t0));
  EXPECT_TRUE(limits.message("192.0.2.1", t0 + 10s));
  EXPECT_FALSE(limits.message("192.0.2.1", t0 + 59s));
  EXPECT_TRUE(limits.message("192.0.2.1", t0 + 61s));
  ClientLimits unlimited({});
  for (int i = 0; i < 10000; ++i) ASSERT_TRUE(unlimited.message("192.0.2.1", t0));
}

TEST(ClientLimits, ClientsThatLeftAreForgotten) {
  ClientLimits limits({.max_connections = 5, .max_connection_rate = 100});
  ASSERT_EQ(limits.connect("192.0.2.1", t0), ClientLimits::Admission::ok);
  limits.disconnected("192.0.2.1", t0);
  EXPECT_EQ(limits.tracked_clients(), 1u);  // its rate window still runs
  // A sweep after the window drops it, however many other clients came by.
  for (int i = 0; i < 2000; ++i) {
    const std::string ip = "198.51.100." + std::to_string(i % 250);
    ASSERT_EQ(limits.connect(ip, t0 + 120s), ClientLimits::Admission::ok);
    limits.disconnected(ip, t0 + 120s);
  }
  EXPECT_LE(limits.tracked_clients(), 250u);
  ClientLimits no_rate({.max_connections = 5});
  ASSERT_EQ(no_rate.connect("192.0.2.1", t0), ClientLimits::Admission::ok);
  no_rate.disconnected("192.0.2.1", t0 + 61s);
  EXPECT_EQ(no_rate.tracked_clients(), 0u);
}

}  // namespace
}  // namespace mxgate::server
