// URLs for the phishing checks (src/filter/url.hpp): text URL discovery,
// browser-style host parsing (RFC 3986 authority, WHATWG host and IPv4
// parsing) and the approximate registrable domain.
#include "filter/url.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace mxgate::filter {
namespace {

std::string host_of(std::string_view url) {
  const auto parsed = parse_url(url);
  return parsed ? parsed->host : std::string("(none)");
}

bool is_ip(std::string_view url) {
  const auto parsed = parse_url(url);
  return parsed && parsed->ip_literal;
}

// --- find_urls ---------------------------------------------------------------

TEST(FindUrls, SchemesAndWwwInRunningText) {
  const auto found =
      find_urls("Log in at https://bank.test/login, or HTTP://Other.test or www.third.test today.");
  ASSERT_EQ(found.urls.size(), 3u);
  EXPECT_EQ(found.urls[0], "https://bank.test/login");
  EXPECT_EQ(found.urls[1], "HTTP://Other.test");
  EXPECT_EQ(found.urls[2], "www.third.test");
  EXPECT_FALSE(found.truncated);
}

TEST(FindUrls, TrailingPunctuationAndBrackets) {
  const auto found =
      find_urls("(see https://wiki.test/Foo_(bar)) and <https://a.test/x>; \"https://b.test/\".");
  ASSERT_EQ(found.urls.size(), 3u);
  EXPECT_EQ(found.urls[0], "https://wiki.test/Foo_(bar)");
  EXPECT_EQ(found.urls[1], "https://a.test/x");
  EXPECT_EQ(found.urls[2], "https://b.test/");
}

TEST(FindUrls, WwwOnlyAtTheStartOfAWord) {
  const auto found = find_urls("foo.www.bar.test xwww.a.test user@www.b.test https://c.test/www.d.test");
  ASSERT_EQ(found.urls.size(), 1u);
  EXPECT_EQ(found.urls[0], "https://c.test/www.d.test");
}

TEST(FindUrls, NoBreakSpaceAndControlsEndAUrl) {
  const auto found = find_urls("https://a.test/x\xc2\xa0next https://b.test\x01tail");
  ASSERT_EQ(found.urls.size(), 2u);
  EXPECT_EQ(found.urls[0], "https://a.test/x");
  EXPECT_EQ(found.urls[1], "https://b.test");
}

TEST(FindUrls, BareSchemesAndBareHostsAreNotUrls) {
  EXPECT_TRUE(find_urls("http:// and https://. and example.test").urls.empty());
}

TEST(FindUrls, StopsAtTheLimitAndSaysSo) {
  std::string text;
  for (int i = 0; i < 5; ++i) text += "http://h" + std::to_string(i) + ".test ";
  const auto at_limit = find_urls(text, 5);
  EXPECT_EQ(at_limit.urls.size(), 5u);
  EXPECT_FALSE(at_limit.truncated);
  const auto past = find_urls(text + "http://one-more.test", 5);
  EXPECT_EQ(past.urls.size(), 5u);
  EXPECT_TRUE(past.truncated);
}

TEST(FindUrls, DefaultLimitOnAHugeText) {
  std::string text;
  for (std::size_t i = 0; i <= kMaxTextUrls; ++i) text += "www.a.test ";
  const auto found = find_urls(text);
  EXPECT_EQ(found.urls.size(), kMaxTextUrls);
  EXPECT_TRUE(found.truncated);
}

TEST(FindUrls, OverlongUrlIsCut) {
  const std::string text = "https://a.test/" + std::string(kMaxUrlLength * 2, 'x') + " https://b.test";
  const auto found = find_urls(text);
  ASSERT_EQ(found.urls.size(), 2u);
  EXPECT_EQ(found.urls[0].size(), kMaxUrlLength);
  EXPECT_EQ(found.urls[1], "https://b.test");
}

// --- parse_url: hosts ----------------------------------------------------------

TEST(ParseUrl, HostIsLowerCaseWithoutPortOrTrailingDot) {
  EXPECT_EQ(host_of("https://WWW.Example.TEST:443/login?x=1#y"), "www.example.test");
  EXPECT_EQ(host_of("http://example.test./"), "example.test");
  EXPECT_EQ(host_of("www.example.test/path"), "www.example.test");
  EXPECT_EQ(host_of("//cdn.example.test/x.js"), "cdn.example.test");
  EXPECT_EQ(host_of("ftp://files.test"), "files.test");
  EXPECT_EQ(parse_url("https://a.test")->scheme, "https");
  EXPECT_EQ(parse_url("www.a.test")->scheme, "");
}

TEST(ParseUrl, UserinfoIsNotTheHost) {
  EXPECT_EQ(host_of("http://paypal.com@evil.test/"), "evil.test");
  EXPECT_EQ(host_of("https://www.bank.test:secret@evil.test:8080/x"), "evil.test");
  EXPECT_EQ(host_of("https://a@b@evil.test/"), "evil.test");
  EXPECT_EQ(host_of("https://bank.test/@evil.test"), "bank.test");
}

TEST(ParseUrl, BrowserLeniency) {
  EXPECT_EQ(host_of("http:\\\\evil.test\\path"), "evil.test");
  EXPECT_EQ(host_of("http:evil.test/x"), "evil.test");
  EXPECT_EQ(host_of("https:///evil.test"), "evil.test");
  EXPECT_EQ(host_of("ht\ntp://ev\til.test/"), "evil.test");
  EXPECT_EQ(host_of("  https://evil.test  "), "evil.test");
  EXPECT_EQ(host_of("http://%65vil.test/"), "evil.test");
  EXPECT_EQ(host_of("http://a\xe3\x80\x82"
                    "evil.test/"),
            "a.evil.test");  // U+3002
  EXPECT_EQ(host_of("http://a\xef\xbc\x8e"
                    "evil.test/"),
            "a.evil.test");  // U+FF0E
}

TEST(ParseUrl, NoHost) {
  for (const char* url : {"/login", "#top", "login.html", "mailto:alice@example.test", "tel:+1555",
                          "javascript:alert(1)", "data:text/html,<b>x</b>", "cid:part1", "", "http://",
                          "https://:443/", "http://a b.test/", "http://a%20b.test/", "http://[::1"}) {
    SCOPED_TRACE(url);
    EXPECT_FALSE(parse_url(url).has_value());
  }
}

TEST(ParseUrl, HostLongerThanADnsNameIsRefused) {
  EXPECT_FALSE(parse_url("http://" + std::string(kMaxHostLength + 1, 'a')).has_value());
  EXPECT_TRUE(parse_url("http://" + std::string(kMaxHostLength, 'a')).has_value());
}

TEST(ParseUrl, UnicodeHostStaysUtf8) {
  EXPECT_EQ(host_of("https://EX\xc3\xa4mple.test/"), "ex\xc3\xa4mple.test");
  EXPECT_FALSE(is_ip("https://ex\xc3\xa4mple.test/"));
}

// --- parse_url and parse_ipv4: IP literals -----------------------------------------

TEST(ParseUrl, IpLiteralsInEveryNotation) {
  struct Case {
    const char* url;
    const char* host;
  };
  for (const Case& c :
       {Case{"http://192.168.1.1/", "192.168.1.1"}, Case{"http://3232235777/", "192.168.1.1"},
        Case{"http://0x7f.1/", "127.0.0.1"}, Case{"http://0x7f000001/", "127.0.0.1"},
        Case{"http://0300.0250.1.1/", "192.168.1.1"}, Case{"http://127.1/", "127.0.0.1"},
        Case{"http://192.168.257/", "192.168.1.1"}, Case{"http://0XC0.0xA8.1.1./", "192.168.1.1"},
        Case{"http://user@10.0.0.1:8080/", "10.0.0.1"}, Case{"http://0x/", "0.0.0.0"}}) {
    SCOPED_TRACE(c.url);
    EXPECT_EQ(host_of(c.url), c.host);
    EXPECT_TRUE(is_ip(c.url));
  }
}

TEST(ParseUrl, Ipv6Literal) {
  EXPECT_EQ(host_of("http://[2001:DB8::1]:8080/"), "2001:db8::1");
  EXPECT_TRUE(is_ip("http://[::ffff:192.168.1.1]/"));
  EXPECT_FALSE(parse_url("http://[example.test]/").has_value());
}

TEST(ParseUrl, InvalidNumericHostsAreRefusedLikeBrowsersDo) {
  for (const char* url : {"http://256.1.1.1/", "http://1.2.3.999/", "http://4294967296/", "http://1.2.3.4.5/",
                          "http://08.1.1.1/", "http://99999999999999999999999/", "http://a.0x1g/"}) {
    SCOPED_TRACE(url);
    EXPECT_FALSE(is_ip(url));
  }
  EXPECT_EQ(host_of("http://a.0x1g/"), "a.0x1g");  // not a number: an ordinary (bogus) name
  EXPECT_EQ(host_of("http://1.2.3.4a/"), "1.2.3.4a");
}

TEST(ParseIpv4, Bounds) {
  EXPECT_EQ(parse_ipv4("4294967295").value_or(""), "255.255.255.255");
  EXPECT_FALSE(parse_ipv4("4294967296"));
  EXPECT_EQ(parse_ipv4("1.16777215").value_or(""), "1.255.255.255");
  EXPECT_FALSE(parse_ipv4("1.16777216"));
  EXPECT_FALSE(parse_ipv4(""));
  EXPECT_FALSE(parse_ipv4("."));
  EXPECT_FALSE(parse_ipv4("1..2"));
  EXPECT_FALSE(parse_ipv4("example.test"));
}

// --- domains -------------------------------------------------------------------

TEST(Domains, SameOrSubdomain) {
  EXPECT_TRUE(is_same_or_subdomain("example.test", "example.test"));
  EXPECT_TRUE(is_same_or_subdomain("mail.example.test", "example.test"));
  EXPECT_FALSE(is_same_or_subdomain("notexample.test", "example.test"));
  EXPECT_FALSE(is_same_or_subdomain("example.test.evil.test", "example.test"));
  EXPECT_FALSE(is_same_or_subdomain("example.test", ""));
}

TEST(Domains, RegistrableDomainApproximation) {
  EXPECT_EQ(registrable_domain("www.example.test"), "example.test");
  EXPECT_EQ(registrable_domain("example.test"), "example.test");
  EXPECT_EQ(registrable_domain("a.b.shop.example.co.uk"), "example.co.uk");
  EXPECT_EQ(registrable_domain("www.example.com.au"), "example.com.au");
  EXPECT_EQ(registrable_domain("bit.ly"), "bit.ly");
  EXPECT_EQ(registrable_domain("t.co"), "t.co");
  EXPECT_EQ(registrable_domain("co.uk"), "co.uk");
  EXPECT_EQ(registrable_domain("localhost"), "localhost");
  EXPECT_EQ(registrable_domain("192.168.1.1"), "192.168.1.1");
  EXPECT_EQ(registrable_domain("2001:db8::1"), "2001:db8::1");
  EXPECT_EQ(public_suffix("shop.example.co.uk"), "co.uk");
  EXPECT_EQ(public_suffix("shop.example.test"), "test");
  EXPECT_EQ(registrable_label("www.example.co.uk"), "example");
  EXPECT_EQ(registrable_label("co.uk"), "");
  EXPECT_TRUE(same_registrable_domain("www.example.test", "login.example.test"));
  EXPECT_FALSE(same_registrable_domain("example.test", "example-login.test"));
}

TEST(Domains, InternationalizedHosts) {
  EXPECT_TRUE(is_internationalized_host("xn--exmple-cua.test"));
  EXPECT_TRUE(is_internationalized_host("www.XN--exmple-cua.test"));
  EXPECT_TRUE(is_internationalized_host("ex\xc3\xa4mple.test"));
  EXPECT_FALSE(is_internationalized_host("example.test"));
  EXPECT_FALSE(is_internationalized_host("axn--b.test"));
}

}  // namespace
}  // namespace mxgate::filter
