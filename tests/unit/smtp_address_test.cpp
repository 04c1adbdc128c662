// Envelope address syntax (src/smtp/address.hpp): RFC 5321 section 4.1.2
// paths, RFC 6531 UTF-8 addresses, RFC 5321 section 4.5.3.1 size limits.
#include "smtp/address.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace mxgate::smtp {
namespace {

constexpr PathOptions kReverse{.allow_null = true};
constexpr PathOptions kForward{.allow_postmaster = true};
constexpr PathOptions kForwardUtf8{.allow_postmaster = true, .utf8 = true};
constexpr PathOptions kPlain{};

// Parses and expects success with the given mailbox and an empty rest.
void expect_mailbox(std::string_view text, std::string_view mailbox, const PathOptions& options = kPlain) {
  SCOPED_TRACE(std::string(text));
  const ParsedPath p = parse_path(text, options);
  EXPECT_EQ(p.error, AddressError::none);
  EXPECT_EQ(p.mailbox, mailbox);
  EXPECT_EQ(p.rest, "");
  EXPECT_FALSE(p.non_ascii);
}

void expect_syntax_error(std::string_view text, const PathOptions& options = kPlain) {
  SCOPED_TRACE(std::string(text));
  EXPECT_EQ(parse_path(text, options).error, AddressError::syntax);
}

std::string repeat(char c, std::size_t n) { return std::string(n, c); }

// --- Dot-string local parts -------------------------------------------------

TEST(AddressDotString, ValidLocalParts) {
  expect_mailbox("<user@example.com>", "user@example.com");
  expect_mailbox("<first.last@example.com>", "first.last@example.com");
  expect_mailbox("<a@b>", "a@b");
  expect_mailbox("<x+tag@example.com>", "x+tag@example.com");
  expect_mailbox("<!#$%&'*+-/=?^_`{|}~@example.com>", "!#$%&'*+-/=?^_`{|}~@example.com");
  expect_mailbox("<UPPER.Case.123@Example.COM>", "UPPER.Case.123@Example.COM");
}

TEST(AddressDotString, InvalidLocalParts) {
  expect_syntax_error("<.user@example.com>");
  expect_syntax_error("<user.@example.com>");
  expect_syntax_error("<us..er@example.com>");
  expect_syntax_error("<@example.com>");
  expect_syntax_error("<us er@example.com>");
  expect_syntax_error("<us(er@example.com>");
  expect_syntax_error("<us)er@example.com>");
  expect_syntax_error("<us,er@example.com>");
  expect_syntax_error("<us;er@example.com>");
  expect_syntax_error("<us:er@example.com>");
  expect_syntax_error("<us[er@example.com>");
  expect_syntax_error("<us\\er@example.com>");
  expect_syntax_error(std::string_view("<us\0er@example.com>", 19));
  expect_syntax_error("<us\ter@example.com>");
  expect_syntax_error(
      "<us\x7f"
      "er@example.com>");
}

TEST(AddressDotString, LastAtSeparatesLocalPartFromDomain) {
  // "a@b" is not a dot-string: '@' is not atext.
  expect_syntax_error("<a@b@example.com>");
}

// --- Quoted-string local parts ------------------------------------------------

TEST(AddressQuotedString, Valid) {
  expect_mailbox("<\"john doe\"@example.com>", "\"john doe\"@example.com");
  expect_mailbox("<\"a@b\"@example.com>", "\"a@b\"@example.com");
  expect_mailbox("<\"\"@example.com>", "\"\"@example.com");
  expect_mailbox("<\"a.\"@example.com>", "\"a.\"@example.com");
  expect_mailbox("<\"(),:;<>[]\"@example.com>", "\"(),:;<>[]\"@example.com");
}

TEST(AddressQuotedString, EscapedPairs) {
  expect_mailbox("<\"a\\\"b\"@example.com>", "\"a\\\"b\"@example.com");
  expect_mailbox("<\"a\\\\b\"@example.com>", "\"a\\\\b\"@example.com");
  expect_mailbox("<\"\\x\"@example.com>", "\"\\x\"@example.com");
  expect_mailbox("<\"a\\ b\"@example.com>", "\"a\\ b\"@example.com");
}

TEST(AddressQuotedString, AngleBracketInsideQuotesDoesNotClosePath) {
  const ParsedPath p = parse_path("<\"a>b\"@example.com> SIZE=10", kReverse);
  EXPECT_EQ(p.error, AddressError::none);
  EXPECT_EQ(p.mailbox, "\"a>b\"@example.com");
  EXPECT_EQ(p.rest, "SIZE=10");
}

TEST(AddressQuotedString, EscapedQuoteDoesNotEndQuoting) {
  const ParsedPath p = parse_path("<\"a\\\">b\"@example.com>", kPlain);
  EXPECT_EQ(p.error, AddressError::none);
  EXPECT_EQ(p.mailbox, "\"a\\\">b\"@example.com");
}

TEST(AddressQuotedString, Invalid) {
  expect_syntax_error("<\"unterminated@example.com>");
  expect_syntax_error("<\"a\"b@example.com>");
  expect_syntax_error("<a\"b\"@example.com>");
  expect_syntax_error("<\"a\"\"b\"@example.com>");
  expect_syntax_error("<\"a\\\"@example.com>");  // the escape eats the closing quote
  expect_syntax_error("<\"a\tb\"@example.com>");
  expect_syntax_error("<\"a\x01\"@example.com>");
  expect_syntax_error("<\"a\\\x01\"@example.com>");  // quoted-pairSMTP is %d92 %d32-126
  expect_syntax_error("<\"a\x7f\"@example.com>");
  expect_syntax_error("<\"a\"@example.com");  // no '>' outside the quotes
  expect_syntax_error("<\"a>@example.com");   // '>' only inside an open quote
}

// --- Domains --------------------------------------------------------------------

TEST(AddressDomain, ValidDomains) {
  expect_mailbox("<a@example>", "a@example");
  expect_mailbox("<a@ex-ample.com>", "a@ex-ample.com");
  expect_mailbox("<a@e--x.com>", "a@e--x.com");
  expect_mailbox("<a@123.example>", "a@123.example");
  expect_mailbox("<a@xn--bcher-kva.example>", "a@xn--bcher-kva.example");
  expect_mailbox("<a@1.2.3.4>", "a@1.2.3.4");  // an LDH domain, not a literal
}

TEST(AddressDomain, InvalidDomains) {
  expect_syntax_error("<a@>");
  expect_syntax_error("<a@-example.com>");
  expect_syntax_error("<a@example-.com>");
  expect_syntax_error("<a@example.-com>");
  expect_syntax_error("<a@example.com->");
  expect_syntax_error("<a@.example.com>");
  expect_syntax_error("<a@example..com>");
  expect_syntax_error("<a@example.com.>");  // trailing dot
  expect_syntax_error("<a@exa_mple.com>");
  expect_syntax_error("<a@exa mple.com>");
  expect_syntax_error("<a@example.com:25>");
}

TEST(AddressDomain, LabelLengthLimit63) {
  const std::string label63 = repeat('a', 63);
  const std::string label64 = repeat('a', 64);
  EXPECT_TRUE(is_valid_domain(label63 + ".example", false));
  EXPECT_FALSE(is_valid_domain(label64 + ".example", false));
  EXPECT_TRUE(is_valid_domain("example." + label63, false));
  EXPECT_FALSE(is_valid_domain("example." + label64, false));
  expect_mailbox("<a@" + label63 + ".example>", "a@" + label63 + ".example");
  expect_syntax_error("<a@" + label64 + ".example>");
}

TEST(AddressDomain, DomainLengthLimit255) {
  // 63+1+63+1+63+1+63 = 255.
  const std::string label = repeat('a', 63);
  const std::string d255 = label + "." + label + "." + label + "." + label;
  ASSERT_EQ(d255.size(), 255u);
  EXPECT_TRUE(is_valid_domain(d255, false));
  const std::string d256 = d255.substr(0, 253) + ".ab";  // labels fine, 256 octets
  ASSERT_EQ(d256.size(), 256u);
  EXPECT_FALSE(is_valid_domain(d256, false));
}

TEST(AddressDomain, IsValidDomainDirect) {
  EXPECT_TRUE(is_valid_domain("mx.example.test", false));
  EXPECT_TRUE(is_valid_domain("a", false));
  EXPECT_TRUE(is_valid_domain("[192.0.2.1]", false));
  EXPECT_FALSE(is_valid_domain("", false));
  EXPECT_FALSE(is_valid_domain(".", false));
  EXPECT_FALSE(is_valid_domain("a.", false));
  EXPECT_FALSE(is_valid_domain(".a", false));
  EXPECT_FALSE(is_valid_domain("a..b", false));
  EXPECT_FALSE(is_valid_domain("-", false));
  EXPECT_FALSE(is_valid_domain("a-", false));
  EXPECT_FALSE(is_valid_domain("[192.0.2.1", false));
  EXPECT_FALSE(
      is_valid_domain("b\xC3\xBC"
                      "cher.example",
                      false));
  EXPECT_TRUE(
      is_valid_domain("b\xC3\xBC"
                      "cher.example",
                      true));
  EXPECT_FALSE(
      is_valid_domain("b\xC3"
                      "cher.example",
                      true));  // truncated sequence
}

// --- Address literals -------------------------------------------------------------

TEST(AddressLiteral, IPv4) {
  expect_mailbox("<a@[192.0.2.1]>", "a@[192.0.2.1]");
  expect_mailbox("<a@[0.0.0.0]>", "a@[0.0.0.0]");
  expect_mailbox("<a@[255.255.255.255]>", "a@[255.255.255.255]");
  expect_syntax_error("<a@[256.0.0.1]>");
  expect_syntax_error("<a@[192.0.2]>");
  expect_syntax_error("<a@[192.0.2.1.5]>");
  expect_syntax_error("<a@[]>");
  expect_syntax_error("<a@[192.0.2.1>");
  expect_syntax_error("<a@192.0.2.1]>");
}

TEST(AddressLiteral, IPv6) {
  expect_mailbox("<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]");
  expect_mailbox("<a@[IPv6:::1]>", "a@[IPv6:::1]");
  expect_mailbox("<a@[ipv6:::ffff:192.0.2.1]>", "a@[ipv6:::ffff:192.0.2.1]");
  expect_syntax_error("<a@[IPv6:2001:db8::g]>");
  expect_syntax_error("<a@[IPv6:1:2:3:4:5:6:7:8:9]>");
  expect_syntax_error("<a@[IPv6:]>");
  // Without the IPv6 tag, "2001" reads as a Standardized-tag: a General-address-literal.
  expect_mailbox("<a@[2001:db8::1]>", "a@[2001:db8::1]");
}

TEST(AddressLiteral, General) {
  EXPECT_TRUE(is_valid_address_literal("[x-tag:content]"));
  EXPECT_TRUE(is_valid_address_literal("[tag:a.b-c!]"));
  EXPECT_FALSE(is_valid_address_literal("[tag:]"));
  EXPECT_FALSE(is_valid_address_literal("[:content]"));
  EXPECT_FALSE(is_valid_address_literal("[ta_g:content]"));
  EXPECT_FALSE(is_valid_address_literal("[tag:con tent]"));
  EXPECT_FALSE(is_valid_address_literal("[tag:con[tent]"));
  EXPECT_FALSE(is_valid_address_literal("[tag:con\\tent]"));
  EXPECT_FALSE(is_valid_address_literal("[tag:con]tent]"));
  EXPECT_FALSE(is_valid_address_literal("[]"));
  EXPECT_FALSE(is_valid_address_literal("x"));
  EXPECT_TRUE(is_valid_address_literal("[192.0.2.1]"));
  EXPECT_TRUE(is_valid_address_literal("[IPv6:::1]"));
  expect_mailbox("<a@[x-tag:content]>", "a@[x-tag:content]");
}

// --- Source routes -----------------------------------------------------------------

TEST(AddressSourceRoute, AcceptedAndDropped) {
  expect_mailbox("<@relay.example:user@example.com>", "user@example.com");
  expect_mailbox("<@a.example,@b.example:user@example.com>", "user@example.com");
  expect_mailbox("<@a,@b,@c:u@d>", "u@d");
}

TEST(AddressSourceRoute, Utf8RouteIsDroppedButStillNeedsSmtputf8) {
  // The route is only valid under RFC 6531, but the mailbox left is ASCII.
  const std::string text = "<@r\xC3\xA9lais.example:u@example.com>";
  const ParsedPath without = parse_path(text, kReverse);
  EXPECT_EQ(without.error, AddressError::needs_smtputf8);
  EXPECT_EQ(without.mailbox, "u@example.com");
  EXPECT_FALSE(without.non_ascii);
  const ParsedPath with = parse_path(text, kForwardUtf8);
  EXPECT_EQ(with.error, AddressError::none);
  EXPECT_EQ(with.mailbox, "u@example.com");
  EXPECT_FALSE(with.non_ascii);
}

TEST(AddressSourceRoute, Invalid) {
  expect_syntax_error("<@relay.example user@example.com>");
  expect_syntax_error("<@:user@example.com>");
  expect_syntax_error("<@a,:user@example.com>");
  expect_syntax_error("<@a,b:user@example.com>");
  expect_syntax_error("<@-a:user@example.com>");
  expect_syntax_error("<@a:>");
  expect_syntax_error("<@a:@b:u@d>");
}

// --- Null path and Postmaster --------------------------------------------------------

TEST(AddressNullPath, OnlyWhenAllowed) {
  const ParsedPath p = parse_path("<>", kReverse);
  EXPECT_EQ(p.error, AddressError::none);
  EXPECT_EQ(p.mailbox, "");
  EXPECT_EQ(p.rest, "");
  expect_syntax_error("<>", kForward);
  expect_syntax_error("< >", kReverse);
}

TEST(AddressNullPath, WithParameters) {
  const ParsedPath p = parse_path("<> SIZE=100 BODY=8BITMIME", kReverse);
  EXPECT_EQ(p.error, AddressError::none);
  EXPECT_EQ(p.mailbox, "");
  EXPECT_EQ(p.rest, "SIZE=100 BODY=8BITMIME");
}

TEST(AddressPostmaster, WithoutDomainOnlyWhenAllowed) {
  expect_mailbox("<Postmaster>", "Postmaster", kForward);
  expect_mailbox("<postmaster>", "postmaster", kForward);
  expect_mailbox("<POSTMASTER>", "POSTMASTER", kForward);
  expect_syntax_error("<Postmaster>", kReverse);
  expect_syntax_error("<Postmasterx>", kForward);
  expect_syntax_error("<Postmaste>", kForward);
  expect_syntax_error("<user>", kForward);
  expect_mailbox("<postmaster@example.com>", "postmaster@example.com", kForward);
}

// --- Length limits -------------------------------------------------------------------

TEST(AddressLimits, LocalPart64AcceptedAnd65Refused) {
  const std::string l64 = repeat('a', 64);
  const std::string l65 = repeat('a', 65);
  expect_mailbox("<" + l64 + "@example.com>", l64 + "@example.com");
  expect_syntax_error("<" + l65 + "@example.com>");
  // A quoted local part counts its quotes.
  const std::string q64 = "\"" + repeat('b', 62) + "\"";
  const std::string q65 = "\"" + repeat('b', 63) + "\"";
  expect_mailbox("<" + q64 + "@example.com>", q64 + "@example.com");
  expect_syntax_error("<" + q65 + "@example.com>");
}

TEST(AddressLimits, Path256AcceptedAnd257Refused) {
  // "<" + local(64) + "@" + domain + ">" = 256 -> domain of 189 octets.
  const std::string local = repeat('a', 64);
  const std::string domain189 = repeat('b', 63) + "." + repeat('c', 63) + "." + repeat('d', 61);
  ASSERT_EQ(domain189.size(), 189u);
  const std::string path256 = "<" + local + "@" + domain189 + ">";
  ASSERT_EQ(path256.size(), 256u);
  expect_mailbox(path256, local + "@" + domain189);
  const std::string path257 = "<" + local + "@" + domain189 + "d>";
  ASSERT_EQ(path257.size(), 257u);
  expect_syntax_error(path257);
  // With a source route, the route counts towards the path too.
  const std::string routed = "<@r:" + local + "@" + domain189.substr(3) + ">";
  ASSERT_EQ(routed.size(), 256u);
  expect_mailbox(routed, local + "@" + domain189.substr(3));
  expect_syntax_error("<@rr:" + local + "@" + domain189.substr(3) + ">");
}

// --- UTF-8 (RFC 6531) --------------------------------------------------------------------

TEST(AddressUtf8, NonAsciiNeedsSmtputf8) {
  const std::string text =
      "<j\xC3\xB6rg@b\xC3\xBC"
      "cher.example>";
  const ParsedPath without = parse_path(text, kReverse);
  EXPECT_EQ(without.error, AddressError::needs_smtputf8);
  EXPECT_EQ(without.mailbox,
            "j\xC3\xB6rg@b\xC3\xBC"
            "cher.example");
  EXPECT_TRUE(without.non_ascii);

  const ParsedPath with = parse_path(text, kForwardUtf8);
  EXPECT_EQ(with.error, AddressError::none);
  EXPECT_EQ(with.mailbox,
            "j\xC3\xB6rg@b\xC3\xBC"
            "cher.example");
  EXPECT_TRUE(with.non_ascii);
}

TEST(AddressUtf8, NonAsciiLocalPartOnlyAndQuoted) {
  const ParsedPath a = parse_path("<\xE7\x94\xA8\xE6\x88\xB7@example.com>", kForwardUtf8);
  EXPECT_EQ(a.error, AddressError::none);
  EXPECT_TRUE(a.non_ascii);
  const ParsedPath b = parse_path("<\"\xC3\xA9 x\"@example.com>", kForwardUtf8);
  EXPECT_EQ(b.error, AddressError::none);
  EXPECT_TRUE(b.non_ascii);
  const ParsedPath c = parse_path("<user@\xF0\x9F\x98\x80.example>", kForward);
  EXPECT_EQ(c.error, AddressError::needs_smtputf8);
}

TEST(AddressUtf8, AsciiWithUtf8OptionIsNotNonAscii) {
  const ParsedPath p = parse_path("<user@example.com>", kForwardUtf8);
  EXPECT_EQ(p.error, AddressError::none);
  EXPECT_FALSE(p.non_ascii);
}

TEST(AddressUtf8, InvalidUtf8IsSyntaxEvenWithSmtputf8) {
  for (const PathOptions& options : {kReverse, kForwardUtf8}) {
    expect_syntax_error("<j\xC3rg@example.com>", options);              // truncated
    expect_syntax_error("<j\xC0\xAFrg@example.com>", options);          // overlong '/'
    expect_syntax_error("<j\xED\xA0\x80rg@example.com>", options);      // surrogate
    expect_syntax_error("<j\xF4\x90\x80\x80rg@example.com>", options);  // > U+10FFFF
    expect_syntax_error("<j\xFFrg@example.com>", options);
    expect_syntax_error("<j\x80rg@example.com>", options);  // lone continuation
    expect_syntax_error(
        "<user@b\xC3"
        "cher.example>",
        options);
  }
}

TEST(AddressUtf8, IsValidUtf8) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("plain"));
  EXPECT_TRUE(is_valid_utf8("\xC2\x80"));               // U+0080
  EXPECT_TRUE(is_valid_utf8("\xDF\xBF"));               // U+07FF
  EXPECT_TRUE(is_valid_utf8("\xE0\xA0\x80"));           // U+0800
  EXPECT_TRUE(is_valid_utf8("\xED\x9F\xBF"));           // U+D7FF
  EXPECT_TRUE(is_valid_utf8("\xEE\x80\x80"));           // U+E000
  EXPECT_TRUE(is_valid_utf8("\xEF\xBF\xBF"));           // U+FFFF
  EXPECT_TRUE(is_valid_utf8("\xF0\x90\x80\x80"));       // U+10000
  EXPECT_TRUE(is_valid_utf8("\xF4\x8F\xBF\xBF"));       // U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xC1\xBF"));              // overlong
  EXPECT_FALSE(is_valid_utf8("\xE0\x9F\xBF"));          // overlong
  EXPECT_FALSE(is_valid_utf8("\xF0\x8F\xBF\xBF"));      // overlong
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));          // U+D800
  EXPECT_FALSE(is_valid_utf8("\xED\xBF\xBF"));          // U+DFFF
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));      // U+110000
  EXPECT_FALSE(is_valid_utf8("\xF8\x88\x80\x80\x80"));  // 5-byte form
  EXPECT_FALSE(is_valid_utf8("\xC2"));
  EXPECT_FALSE(is_valid_utf8("\xE0\xA0"));
  EXPECT_FALSE(is_valid_utf8("\xC2\x41"));
  EXPECT_FALSE(is_valid_utf8("\x80"));
}

// --- Brackets and the rest after '>' ---------------------------------------------------------

TEST(AddressRest, ParametersAfterPath) {
  const ParsedPath p = parse_path("<a@b.example> SIZE=1000 BODY=8BITMIME", kReverse);
  EXPECT_EQ(p.error, AddressError::none);
  EXPECT_EQ(p.mailbox, "a@b.example");
  EXPECT_EQ(p.rest, "SIZE=1000 BODY=8BITMIME");
}

TEST(AddressRest, LeadingSpacesRemovedTrailingKept) {
  const ParsedPath p = parse_path("<a@b.example>    X=1 ", kReverse);
  EXPECT_EQ(p.error, AddressError::none);
  EXPECT_EQ(p.rest, "X=1 ");
  const ParsedPath q = parse_path("<a@b.example>   ", kReverse);
  EXPECT_EQ(q.error, AddressError::none);
  EXPECT_EQ(q.rest, "");
}

TEST(AddressRest, RestIsAViewIntoTheInput) {
  const std::string text = "<a@b.example> SMTPUTF8";
  const ParsedPath p = parse_path(text, kReverse);
  ASSERT_EQ(p.rest, "SMTPUTF8");
  EXPECT_EQ(p.rest.data(), text.data() + 14);
}

TEST(AddressRest, SomethingOtherThanSpaceAfterCloseIsAnError) {
  expect_syntax_error("<a@b.example>SIZE=10");
  expect_syntax_error("<a@b.example>>");
  expect_syntax_error("<a@b.example>\t");
}

TEST(AddressBrackets, MissingOrMisplaced) {
  expect_syntax_error("");
  expect_syntax_error("a@b.example");
  expect_syntax_error("<a@b.example");
  expect_syntax_error("a@b.example>");
  expect_syntax_error(" <a@b.example>");
  expect_syntax_error("<<a@b.example>>");
  expect_syntax_error("<a<b@example.com>");
  expect_syntax_error("<");
  expect_syntax_error(">");
}

TEST(AddressBrackets, FirstCloseOutsideQuotesEndsThePath) {
  // "<a@b> c@d>": the path is <a@b>, "c@d>" is left as parameters.
  const ParsedPath p = parse_path("<a@b> c@d>", kReverse);
  EXPECT_EQ(p.error, AddressError::none);
  EXPECT_EQ(p.mailbox, "a@b");
  EXPECT_EQ(p.rest, "c@d>");
}

}  // namespace
}  // namespace mxgate::smtp
