// Look-alike domains (src/filter/lookalike.hpp): IDNA decoding (RFC 5891,
// libidn2), UTS #39 confusable skeletons (ICU), edit distance, and the
// matcher built from the protected domains.
#include "filter/lookalike.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace mxgate::filter {
namespace {

LookalikeMatcher make_matcher(const std::vector<std::string>& domains) {
  auto matcher = LookalikeMatcher::create(domains);
  EXPECT_TRUE(matcher.ok()) << (matcher.ok() ? "" : matcher.error());
  return std::move(matcher).value();
}

// --- IDNA and normalisation ---------------------------------------------------

TEST(UnicodeDomain, DecodesALabelsAndFolds) {
  EXPECT_EQ(to_unicode_domain("xn--exmple-cua.test"), "ex\xc3\xa4mple.test");
  EXPECT_EQ(to_unicode_domain("www.XN--EXMPLE-CUA.Test."), "www.ex\xc3\xa4mple.test");
  EXPECT_EQ(to_unicode_domain("EXAMPLE.TEST"), "example.test");
  EXPECT_EQ(to_unicode_domain("\xef\xbd\x85xample.test"), "example.test");  // full-width e
}

TEST(UnicodeDomain, InvalidPunycodeAndUtf8AreKeptNotFatal) {
  EXPECT_EQ(to_unicode_domain("xn--zzzz-.test"), "xn--zzzz-.test");
  EXPECT_EQ(to_unicode_domain("xn--.test"), "xn--.test");
  EXPECT_EQ(to_unicode_domain("xn--exmple-cua.xn--99999999999999999999.test"),
            "ex\xc3\xa4mple.xn--99999999999999999999.test");
  EXPECT_EQ(to_unicode_domain("\xff\xfe.test"), "\xef\xbf\xbd\xef\xbf\xbd.test");
  EXPECT_EQ(to_unicode_domain(""), "");
  EXPECT_FALSE(to_unicode_domain(std::string(100000, 'a')).empty());
}

// --- skeletons and distance --------------------------------------------------------

TEST(Skeleton, ConfusablesShareOneSkeleton) {
  auto opened = ConfusableSkeleton::open();
  ASSERT_TRUE(opened.ok());
  const ConfusableSkeleton& s = opened.value();
  EXPECT_EQ(s.skeleton("examp1e"), s.skeleton("example"));
  EXPECT_EQ(s.skeleton("exarnple"), s.skeleton("example"));
  EXPECT_EQ(s.skeleton("g00gle"), s.skeleton("google"));
  EXPECT_EQ(s.skeleton("GOOGLE"), s.skeleton("google"));
  EXPECT_EQ(s.skeleton("\xd0\xb0pple"), s.skeleton("apple"));      // Cyrillic a
  EXPECT_EQ(s.skeleton("ex\xc3\xa4mple"), s.skeleton("example"));  // marks dropped
  EXPECT_NE(s.skeleton("example"), s.skeleton("exempel"));
  EXPECT_EQ(s.skeleton(""), std::u32string());
  EXPECT_FALSE(s.skeleton("\xff\xfe\xc3").empty());
}

TEST(EditDistance, RestrictedDamerauLevenshtein) {
  EXPECT_EQ(edit_distance(U"example", U"example", 2), 0u);
  EXPECT_EQ(edit_distance(U"example", U"exampel", 2), 1u);  // swap of neighbours
  EXPECT_EQ(edit_distance(U"example", U"examples", 2), 1u);
  EXPECT_EQ(edit_distance(U"example", U"exmple", 2), 1u);
  EXPECT_EQ(edit_distance(U"example", U"exbmple", 2), 1u);
  EXPECT_EQ(edit_distance(U"example", U"xeampel", 2), 2u);
  EXPECT_EQ(edit_distance(U"example", U"unrelated", 2), 3u);  // limit + 1
  EXPECT_EQ(edit_distance(U"", U"abc", 1), 2u);
  EXPECT_EQ(edit_distance(U"", U"", 0), 0u);
}

// --- the matcher ---------------------------------------------------------------

TEST(Lookalike, ConfusableCharacters) {
  const auto m = make_matcher({"example.test"});
  for (const char* domain :
       {"exarnple.test", "examp1e.test", "xn--exmple-cua.test", "ex\xc3\xa4mple.test", "EXARNPLE.TEST",
        "www.examp1e.test", "\xd0\xb5xample.test" /* Cyrillic e */, "\xef\xbd\x85xarnple.test"}) {
    SCOPED_TRACE(domain);
    const auto match = m.match(domain);
    ASSERT_TRUE(match.has_value());
    EXPECT_EQ(match->protected_domain, "example.test");
    EXPECT_EQ(match->reason, "confusable characters");
  }
}

TEST(Lookalike, TyposWithinTheEditDistance) {
  const auto m = make_matcher({"example.test", "northwindtraders.test", "acme.test"});
  EXPECT_EQ(m.match("exampel.test")->reason, "1 edit");
  EXPECT_TRUE(m.match("examples.test"));
  EXPECT_TRUE(m.match("exmple.test"));
  EXPECT_TRUE(m.match("login.exmple.test"));
  EXPECT_FALSE(m.match("exmpel.test"));         // 2 edits on a 7-letter name
  EXPECT_TRUE(m.match("nortwindtrader.test"));  // 2 edits on a 16-letter name
  EXPECT_FALSE(m.match("nortwindtrade.test"));
  EXPECT_FALSE(m.match("acne.test"));    // 4 letters: skeleton only
  EXPECT_TRUE(m.match("acrne.test"));    // ...which "rn" for "m" is
  EXPECT_FALSE(m.match("exampel.org"));  // typo under another suffix: not compared
}

TEST(Lookalike, SameNameUnderAnotherSuffix) {
  const auto m = make_matcher({"example.co.uk"});
  EXPECT_EQ(m.match("example.com")->reason, "same name under another suffix");
  EXPECT_TRUE(m.match("example.co"));
  EXPECT_TRUE(m.match("exannple.co.uk"));
  EXPECT_FALSE(m.match("shop.example.co.uk"));
}

TEST(Lookalike, TheProtectedDomainItselfIsNot) {
  const auto m = make_matcher({"example.test"});
  for (const char* domain : {"example.test", "mail.example.test", "EXAMPLE.TEST", "example.test.",
                             "a.b.c.example.test", "unrelated.org", "sample.test", "test",
                             "example.test.evil.org" /* a subdomain trick, not a look-alike */, "192.168.1.1",
                             "2001:db8::1", ""}) {
    SCOPED_TRACE(domain);
    EXPECT_FALSE(m.match(domain).has_value());
  }
  EXPECT_TRUE(m.is_protected("mail.EXAMPLE.test"));
  EXPECT_FALSE(m.is_protected("notexample.test"));
}

TEST(Lookalike, ProtectedSubdomainDoesNotFlagItsSiblings) {
  const auto m = make_matcher({"mail.example.test"});
  EXPECT_FALSE(m.match("www.example.test"));
  EXPECT_TRUE(m.match("exarnple.test"));
}

TEST(Lookalike, InternationalizedProtectedDomain) {
  const auto m = make_matcher({"xn--bcher-kva.test"});  // bücher.test
  EXPECT_TRUE(
      m.is_protected("shop.b\xc3\xbc"
                     "cher.test"));
  EXPECT_FALSE(
      m.match("b\xc3\xbc"
              "cher.test"));
  EXPECT_TRUE(m.match("bucher.test"));
  EXPECT_FALSE(m.match("xn--bcher-kva.test"));
}

TEST(Lookalike, HostileInputDoesNotCrash) {
  const auto m = make_matcher({"example.test", "", "xn--zzzz-.test", "\xff.test", "10.0.0.1"});
  for (const std::string& domain :
       {std::string("xn--zzzz-.test"), std::string("xn--.xn--.xn--"), std::string("\xff\xfe\xfd.test"),
        std::string("\xc3.test"), std::string(300, 'a') + ".test", std::string(63, 'x') + ".test",
        std::string("....."), std::string("xn--ls8h.test"), std::string("a\0b.test", 8),
        std::string("xn--a-ecp.ru") /* a⒈.ru: NFKC adds a dot */}) {
    (void)m.match(domain);
    (void)m.is_protected(domain);
  }
  EXPECT_FALSE(m.match("xn--zzzz-.test"));  // the configured garbage matches only itself
}

TEST(Lookalike, NoProtectedDomainsMatchNothing) {
  const auto m = make_matcher({});
  EXPECT_FALSE(m.match("exarnple.test"));
  EXPECT_FALSE(m.is_protected("example.test"));
}

}  // namespace
}  // namespace mxgate::filter
