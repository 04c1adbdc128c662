// The libunbound Resolver without a network: option checking, libunbound's
// own local data (localhost., invalid.) answered through the real async path
// (worker thread, ub_fd, ub_process), timeouts against a loopback UDP socket
// that never answers, and destruction with queries pending.  Signed zones,
// bogus answers and stub servers are tested with real nsd in
// tests/integration/test_dns_resolver.py.
#include "dns/resolver.hpp"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/ip/udp.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>

namespace mxgate::dns {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Runs one lookup to completion on io.
template <class T>
T run(asio::io_context& io, asio::awaitable<T> lookup) {
  std::optional<T> out;
  std::exception_ptr error;
  asio::co_spawn(io, std::move(lookup), [&](std::exception_ptr e, T value) {
    error = e;
    out = std::move(value);
  });
  io.run();
  io.restart();
  if (error) {
    std::rethrow_exception(error);
  }
  return std::move(*out);
}

std::unique_ptr<Resolver> make(asio::io_context& io, const ResolverOptions& options = {}) {
  auto created = Resolver::create(io, options);
  EXPECT_TRUE(created) << created.error();
  return created ? std::move(created.value()) : nullptr;
}

// A UDP socket on 127.0.0.1 that receives queries and never answers.
struct BlackHole {
  explicit BlackHole(asio::io_context& io)
      : socket(io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}
  std::string address() const { return "127.0.0.1@" + std::to_string(socket.local_endpoint().port()); }
  asio::ip::udp::socket socket;
};

TEST(DnsResolver, SecurityNames) {
  EXPECT_EQ(to_string(Security::secure), "secure");
  EXPECT_EQ(to_string(Security::insecure), "insecure");
  EXPECT_EQ(to_string(Security::bogus), "bogus");
}

TEST(DnsResolver, BadTrustAnchorNamed) {
  asio::io_context io;
  ResolverOptions options;
  options.trust_anchors = {"example.test. IN DS 1 13 2 not-hex"};
  auto created = Resolver::create(io, options);
  ASSERT_FALSE(created);
  EXPECT_NE(created.error().find("example.test. IN DS 1 13 2 not-hex"), std::string::npos) << created.error();
}

TEST(DnsResolver, MissingTrustAnchorFileNamed) {
  asio::io_context io;
  ResolverOptions options;
  options.trust_anchor_files = {"/nonexistent/root.key"};
  auto created = Resolver::create(io, options);
  ASSERT_FALSE(created);
  EXPECT_NE(created.error().find("/nonexistent/root.key"), std::string::npos) << created.error();
}

TEST(DnsResolver, BadStubAddressNamed) {
  asio::io_context io;
  for (const std::string bad :
       {"localhost", "127.0.0.1@", "127.0.0.1@0", "127.0.0.1@65536", "127.0.0.1@5x"}) {
    ResolverOptions options;
    options.stub_zones = {{"example.test", {bad}}};
    auto created = Resolver::create(io, options);
    ASSERT_FALSE(created) << bad;
    EXPECT_NE(created.error().find("example.test"), std::string::npos) << created.error();
    EXPECT_NE(created.error().find(bad), std::string::npos) << created.error();
  }
}

TEST(DnsResolver, StubZoneNeedsAddresses) {
  asio::io_context io;
  ResolverOptions options;
  options.stub_zones = {{"example.test", {}}};
  EXPECT_FALSE(Resolver::create(io, options));
}

TEST(DnsResolver, TimeoutMustBePositive) {
  asio::io_context io;
  ResolverOptions options;
  options.query_timeout = 0ms;
  EXPECT_FALSE(Resolver::create(io, options));
}

TEST(DnsResolver, GoodOptionsAccepted) {
  asio::io_context io;
  ResolverOptions options;
  options.stub_zones = {{"example.test", {"127.0.0.1@5300", "::1", "192.0.2.1@53"}}};
  options.trust_anchors = {
      "example.test. IN DS 23834 13 2 b4f2ec25a15ed35b354db617c4067d047153c5534d4c9c42a3d823ddd6455cdf"};
  if (std::filesystem::exists("/usr/share/dns/root.key")) {
    options.trust_anchor_files = {"/usr/share/dns/root.key"};
  }
  EXPECT_TRUE(make(io, options));
}

// libunbound answers localhost. from its built-in local zone: a full trip
// through the worker thread and ub_fd without any network.
TEST(DnsResolver, LocalhostAddresses) {
  asio::io_context io;
  auto resolver = make(io);
  ASSERT_TRUE(resolver);
  auto answer = run(io, resolver->addresses("LocalHost."));
  EXPECT_EQ(answer.status, Status::ok) << answer.reason;
  EXPECT_EQ(answer.security, Security::insecure);
  ASSERT_EQ(answer.records.size(), 2u);
  EXPECT_EQ(answer.records[0].to_string(), "127.0.0.1");  // A before AAAA
  EXPECT_EQ(answer.records[1].to_string(), "::1");
}

TEST(DnsResolver, LocalhostHasNoMx) {
  asio::io_context io;
  auto resolver = make(io);
  ASSERT_TRUE(resolver);
  auto answer = run(io, resolver->mx("localhost"));
  EXPECT_EQ(answer.status, Status::nodata) << answer.reason;
  EXPECT_TRUE(answer.records.empty());
}

TEST(DnsResolver, InvalidTldIsNxdomain) {
  asio::io_context io;
  auto resolver = make(io);
  ASSERT_TRUE(resolver);
  auto mx = run(io, resolver->mx("mail.example.invalid"));
  EXPECT_EQ(mx.status, Status::nxdomain) << mx.reason;
  auto tlsa = run(io, resolver->tlsa(25, "mail.example.invalid"));
  EXPECT_EQ(tlsa.status, Status::nxdomain) << tlsa.reason;
  auto addresses = run(io, resolver->addresses("mail.example.invalid"));
  EXPECT_EQ(addresses.status, Status::nxdomain) << addresses.reason;
}

TEST(DnsResolver, EmptyNameFailsAtOnce) {
  asio::io_context io;
  auto resolver = make(io);
  ASSERT_TRUE(resolver);
  auto answer = run(io, resolver->mx(""));
  EXPECT_EQ(answer.status, Status::failure);
  EXPECT_FALSE(answer.reason.empty());
}

TEST(DnsResolver, SilentServerTimesOut) {
  asio::io_context io;
  BlackHole hole(io);
  ResolverOptions options;
  options.stub_zones = {{"silent.test", {hole.address()}}};
  options.query_timeout = 300ms;
  auto resolver = make(io, options);
  ASSERT_TRUE(resolver);
  const auto start = Clock::now();
  auto answer = run(io, resolver->mx("silent.test"));
  const auto elapsed = Clock::now() - start;
  EXPECT_EQ(answer.status, Status::failure);
  EXPECT_NE(answer.reason.find("timed out"), std::string::npos) << answer.reason;
  EXPECT_GE(elapsed, 300ms);
  EXPECT_LT(elapsed, 5s);
}

TEST(DnsResolver, ManyConcurrentTimeouts) {
  asio::io_context io;
  BlackHole hole(io);
  ResolverOptions options;
  options.stub_zones = {{"silent.test", {hole.address()}}};
  options.query_timeout = 200ms;
  auto resolver = make(io, options);
  ASSERT_TRUE(resolver);
  int failures = 0;
  for (int i = 0; i < 20; ++i) {
    asio::co_spawn(io, resolver->addresses("h" + std::to_string(i) + ".silent.test"),
                   [&](std::exception_ptr, Answer<asio::ip::address> answer) {
                     failures += answer.status == Status::failure ? 1 : 0;
                   });
  }
  const auto start = Clock::now();
  io.run();
  EXPECT_EQ(failures, 20);
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST(DnsResolver, DestroyedWithQueriesPending) {
  asio::io_context io;
  BlackHole hole(io);
  ResolverOptions options;
  options.stub_zones = {{"silent.test", {hole.address()}}};
  options.query_timeout = 30s;
  auto resolver = make(io, options);
  ASSERT_TRUE(resolver);
  std::vector<std::string> reasons;
  for (int i = 0; i < 5; ++i) {
    asio::co_spawn(io, resolver->tlsa(25, "mx" + std::to_string(i) + ".silent.test"),
                   [&](std::exception_ptr, Answer<TlsaRecord> answer) {
                     EXPECT_EQ(answer.status, Status::failure);
                     reasons.push_back(answer.reason);
                   });
  }
  asio::steady_timer later(io, 100ms);
  later.async_wait([&](const asio::error_code&) { resolver.reset(); });
  const auto start = Clock::now();
  io.run();
  EXPECT_LT(Clock::now() - start, 5s);
  ASSERT_EQ(reasons.size(), 5u);
  for (const auto& reason : reasons) {
    EXPECT_EQ(reason, "resolver shut down");
  }
}

TEST(DnsResolver, DestroyedBeforeLookupStarts) {
  // The awaitable is created while the resolver lives, first resumed after it is gone.
  asio::io_context io;
  auto resolver = make(io);
  ASSERT_TRUE(resolver);
  auto lookup = resolver->mx("localhost");
  resolver.reset();
  auto answer = run(io, std::move(lookup));
  EXPECT_EQ(answer.status, Status::failure);
}

}  // namespace
}  // namespace mxgate::dns
