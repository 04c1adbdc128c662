#include "smtp/relay_policy.hpp"

#include <gtest/gtest.h>

#include "fixed_session_environment.hpp"
#include "smtp/session.hpp"

namespace mxgate::smtp {
namespace {

config::Config relay_config() {
  config::Config config;
  config.accept_domains = {"example.test"};
  config::Route corp;
  corp.domain = "corp.example";
  config::Route any;
  any.domain = "*";
  config.routes = {corp, any};
  config.relay_networks = {"127.0.0.0/8", "::1/128", "192.0.2.128/25", "2001:db8::/33"};
  return config;
}

TEST(RelayPolicy, NetworksMatchByPrefix) {
  const auto policy = RelayPolicy::from_config(relay_config());
  ASSERT_TRUE(policy.ok());
  EXPECT_TRUE(policy->client_may_relay("127.0.0.1"));
  EXPECT_TRUE(policy->client_may_relay("127.255.0.9"));
  EXPECT_TRUE(policy->client_may_relay("::1"));
  EXPECT_TRUE(policy->client_may_relay("::ffff:127.0.0.2"));  // v4-mapped
  EXPECT_TRUE(policy->client_may_relay("192.0.2.128"));
  EXPECT_TRUE(policy->client_may_relay("192.0.2.255"));
  EXPECT_FALSE(policy->client_may_relay("192.0.2.127"));
  EXPECT_TRUE(policy->client_may_relay("2001:db8:7fff::1"));
  EXPECT_FALSE(policy->client_may_relay("2001:db8:8000::1"));
  EXPECT_FALSE(policy->client_may_relay("198.51.100.1"));
  EXPECT_FALSE(policy->client_may_relay("::2"));
  EXPECT_FALSE(policy->client_may_relay("not an address"));
}

TEST(RelayPolicy, DomainsFromAcceptListAndSpecificRoutesOnly) {
  const auto policy = RelayPolicy::from_config(relay_config());
  ASSERT_TRUE(policy.ok());
  EXPECT_TRUE(policy->accepts_domain("example.test"));
  EXPECT_TRUE(policy->accepts_domain("EXAMPLE.Test"));
  EXPECT_TRUE(policy->accepts_domain("corp.example"));
  EXPECT_FALSE(policy->accepts_domain("sub.example.test"));
  EXPECT_FALSE(policy->accepts_domain("elsewhere.example"));  // "*" serves relay clients only
}

std::string feed(Session& s, std::string_view bytes) {
  s.receive(bytes);
  return s.advance().output;
}

TEST(RelayPolicy, SessionRefusesRelayFromOutside) {
  const auto policy = RelayPolicy::from_config(relay_config());
  test_support::FixedEnvironment env;
  SessionSettings settings{"mx.example.test", config::TlsMode::none, config::Limits{}, &policy.value()};
  Session outside(settings, env, "198.51.100.7");
  feed(outside, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
  EXPECT_EQ(feed(outside, "RCPT TO:<x@elsewhere.example>\r\n"),
            "554 5.7.1 <x@elsewhere.example>: Relay access denied\r\n");
  EXPECT_EQ(feed(outside, "RCPT TO:<x@Example.TEST>\r\n"), "250 2.1.5 Ok\r\n");
  EXPECT_EQ(feed(outside, "RCPT TO:<x@corp.example>\r\n"), "250 2.1.5 Ok\r\n");
  EXPECT_EQ(feed(outside, "RCPT TO:<Postmaster>\r\n"), "250 2.1.5 Ok\r\n");
  EXPECT_EQ(feed(outside, "RCPT TO:<x@[192.0.2.1]>\r\n"), "554 5.7.1 <x@[192.0.2.1]>: Relay access denied\r\n");

  Session inside(settings, env, "127.0.0.1");
  feed(inside, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
  EXPECT_EQ(feed(inside, "RCPT TO:<x@elsewhere.example>\r\n"), "250 2.1.5 Ok\r\n");
}

}  // namespace
}  // namespace mxgate::smtp
