// DNS blocklist query names (RFC 5782) and the URL domains looked up.
#include "filter/reputation.hpp"

#include <gtest/gtest.h>

namespace mxgate::filter {
namespace {

TEST(Reputation, BlocklistNames) {
  EXPECT_EQ(blocklist_name(asio::ip::make_address("192.0.2.99"), "zen.example"), "99.2.0.192.zen.example");
  EXPECT_EQ(blocklist_name(asio::ip::make_address("2001:db8:1:2:3:4:567:89ab"), "bl.test"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test");
}

TEST(Reputation, UrlDomainsAreRegistrableAndDistinct) {
  auto psl = sender_auth::PublicSuffixList::load();
  ASSERT_TRUE(psl) << psl.error();
  ParsedMessage m;
  m.text = "see http://www.evil.co.uk/a and https://login.evil.co.uk/b and http://192.0.2.7/x\n";
  m.html = "<a href=\"https://Tracker.Example.COM/c\">here</a> www.other.test";
  m.html_body = scan_html(m.html);
  EXPECT_EQ(url_domains(m, *psl, 10),
            (std::vector<std::string>{"evil.co.uk", "192.0.2.7", "example.com", "other.test"}));
  EXPECT_EQ(url_domains(m, *psl, 2), (std::vector<std::string>{"evil.co.uk", "192.0.2.7"}));
  EXPECT_TRUE(url_domains(ParsedMessage{}, *psl, 10).empty());
}

}  // namespace
}  // namespace mxgate::filter
