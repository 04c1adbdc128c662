// The EHLO/HELO judgment (src/filter/helo_check.hpp): every kind of name a
// client greets with, at the edges of the syntax.
#include "filter/helo_check.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mxgate::filter {
namespace {

constexpr const char* kFqdn = "need fully-qualified hostname";

std::string problem(std::string_view helo, std::string_view client = "192.0.2.7") {
  return helo_problem(helo, client, "mx.example.test");
}

TEST(HeloCheck, MailServersNamesPass) {
  for (const char* helo :
       {"mail.example.org", "MAIL.Example.ORG", "mail.example.org.", "a.b", "x-1.example.org",
        "123.example.org", "mail.example.xn--p1ai", "a.b.c.", "mx.example.test.example.org"})
    EXPECT_EQ(problem(helo), "") << helo;
  // 63-octet labels and a 253-octet name are still names.
  const std::string label63(63, 'a');
  EXPECT_EQ(problem(label63 + ".example"), "");
  std::string long_name;
  while (long_name.size() + 64 <= 253) long_name += label63 + ".";
  long_name += std::string(253 - long_name.size() - 4, 'b') + ".org";
  ASSERT_EQ(long_name.size(), 253u);
  EXPECT_EQ(problem(long_name), "");
  EXPECT_EQ(problem(long_name + "x"), kFqdn);
  EXPECT_EQ(problem(std::string(64, 'a') + ".example"), kFqdn);
}

TEST(HeloCheck, WhatBotsSayIsNotAFullyQualifiedName) {
  for (const char* helo : {"localhost", "user-pc", "WIN-7Q2K", "192.0.2.7", "1.2.3.4", "example.123", "a..b",
                           ".example.org", "-bad.example.org", "bad-.example.org", "under_score.example.org",
                           "mail.example.org..", "space here.example", "x.", "", "."})
    EXPECT_EQ(problem(helo), kFqdn) << helo;
}

TEST(HeloCheck, AddressLiteralsMustBeTheClients) {
  EXPECT_EQ(problem("[192.0.2.7]"), "");
  EXPECT_EQ(problem("[192.0.2.8]"), "address literal is not the client's address");
  EXPECT_EQ(problem("[IPv6:2001:db8::1]", "2001:db8::1"), "");
  EXPECT_EQ(problem("[ipv6:2001:DB8::1]", "2001:db8::1"), "");
  EXPECT_EQ(problem("[IPv6:2001:db8::2]", "2001:db8::1"), "address literal is not the client's address");
  // RFC 5321 section 4.1.3: IPv6 needs its tag, IPv4 has none.
  EXPECT_EQ(problem("[2001:db8::1]", "2001:db8::1"), "invalid address literal");
  EXPECT_EQ(problem("[IPv6:192.0.2.7]"), "invalid address literal");
  for (const char* helo : {"[]", "[", "[192.0.2.7", "[300.0.2.7]", "[mail.example.org]", "[192.0.2.7]x"})
    EXPECT_EQ(problem(helo), "invalid address literal") << helo;
}

TEST(HeloCheck, OurOwnNameFromOutsideIsForged) {
  EXPECT_EQ(problem("mx.example.test"), "that is our own hostname");
  EXPECT_EQ(problem("MX.EXAMPLE.TEST."), "that is our own hostname");
  EXPECT_EQ(helo_problem("mx.example.test", "192.0.2.7", "mx.example.test."), "that is our own hostname");
  // Another host of our domain may be a backup MX: not refused.
  EXPECT_EQ(problem("mx2.example.test"), "");
  EXPECT_EQ(problem("example.test"), "");
}

}  // namespace
}  // namespace mxgate::filter
