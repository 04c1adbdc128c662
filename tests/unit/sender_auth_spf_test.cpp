// SPF (src/sender_auth/spf.hpp): record syntax, macro expansion (RFC 7208
// section 7.4's examples exactly), and check_host() evaluated through an
// in-memory dns::Resolver serving a fixed zone table (every answer goes
// through an asio::post, so each lookup really suspends).  The real resolver
// against a real nsd, compared with python3-spf, is
// tests/integration/test_spf_oracle.py.
#include "sender_auth/spf.hpp"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <exception>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mxgate::sender_auth {
namespace {

using dns::Answer;
using dns::MxRecord;
using dns::Status;

// ------------------------------------------------------------ the zone table

// Names are keys after lower-casing and removing a trailing dot.  A name not
// in the table is NXDOMAIN; a name present without records of the asked type
// is NODATA; fail() makes every lookup of a name Status::failure.
class ZoneResolver final : public dns::Resolver {
 public:
  ZoneResolver& add_txt(const std::string& name, std::vector<std::string> records) {
    auto& node = nodes_[key(name)];
    node.txt.insert(node.txt.end(), records.begin(), records.end());
    return *this;
  }
  ZoneResolver& add_addr(const std::string& name, const std::vector<std::string>& addresses) {
    auto& node = nodes_[key(name)];
    for (const auto& a : addresses) {
      node.addr.push_back(asio::ip::make_address(a));
    }
    return *this;
  }
  ZoneResolver& add_mx(const std::string& name, std::vector<MxRecord> records) {
    auto& node = nodes_[key(name)];
    node.mx.insert(node.mx.end(), records.begin(), records.end());
    return *this;
  }
  ZoneResolver& add_name(const std::string& name) {  // exists, no records
    nodes_[key(name)];
    return *this;
  }
  ZoneResolver& fail(const std::string& name) {
    nodes_[key(name)].fail = true;
    return *this;
  }
  ZoneResolver& throw_on(const std::string& name) {
    nodes_[key(name)].throws = true;
    return *this;
  }

  std::vector<std::string> queries;  // "TXT name", "ADDR name", "MX name"

  asio::awaitable<Answer<MxRecord>> mx(std::string domain) override {
    return lookup<MxRecord>("MX", std::move(domain), &Node::mx);
  }
  asio::awaitable<Answer<asio::ip::address>> addresses(std::string host) override {
    return lookup<asio::ip::address>("ADDR", std::move(host), &Node::addr);
  }
  asio::awaitable<Answer<dns::TlsaRecord>> tlsa(std::uint16_t, std::string host) override {
    return lookup<dns::TlsaRecord>("TLSA", std::move(host), &Node::tlsa);
  }
  asio::awaitable<Answer<std::string>> txt(std::string name) override {
    return lookup<std::string>("TXT", std::move(name), &Node::txt);
  }

 private:
  struct Node {
    std::vector<std::string> txt;
    std::vector<asio::ip::address> addr;
    std::vector<MxRecord> mx;
    std::vector<dns::TlsaRecord> tlsa;
    bool fail = false;
    bool throws = false;
  };

  static std::string key(std::string name) {
    while (!name.empty() && name.back() == '.') {
      name.pop_back();
    }
    for (char& c : name) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return name;
  }

  template <class T>
  asio::awaitable<Answer<T>> lookup(std::string type, std::string name, std::vector<T> Node::*field) {
    const std::string k = key(name);
    queries.push_back(type + " " + k);
    auto executor = co_await asio::this_coro::executor;
    co_await asio::post(executor, asio::use_awaitable);
    Answer<T> answer;
    const auto it = nodes_.find(k);
    if (it == nodes_.end()) {
      answer.status = Status::nxdomain;
    } else if (it->second.throws) {
      throw std::runtime_error("resolver exploded");
    } else if (it->second.fail) {
      answer.status = Status::failure;
      answer.reason = "SERVFAIL";
    } else {
      answer.records = it->second.*field;
      answer.status = answer.records.empty() ? Status::nodata : Status::ok;
    }
    co_return answer;
  }

  std::map<std::string, Node> nodes_;
};

SpfVerdict run(asio::awaitable<SpfVerdict> check) {
  asio::io_context io;
  std::optional<SpfVerdict> out;
  std::exception_ptr error;
  asio::co_spawn(io, std::move(check), [&](std::exception_ptr e, SpfVerdict verdict) {
    error = e;
    out = std::move(verdict);
  });
  io.run();
  if (error) {
    std::rethrow_exception(error);
  }
  return std::move(*out);
}

asio::ip::address ip(const std::string& text) { return asio::ip::make_address(text); }

constexpr const char* kHelo = "mail.example.org";

// ------------------------------------------------------------ is_spf_record / parse_spf_record

TEST(SpfRecordSelection, VersionMustBeFollowedBySpaceOrEnd) {
  EXPECT_TRUE(is_spf_record("v=spf1"));
  EXPECT_TRUE(is_spf_record("v=spf1 -all"));
  EXPECT_TRUE(is_spf_record("V=sPf1 +all"));
  EXPECT_TRUE(is_spf_record("v=spf1  "));
  EXPECT_FALSE(is_spf_record("v=spf10"));
  EXPECT_FALSE(is_spf_record("v=spf1mx"));  // "v=spf1" "mx" joined without a space
  EXPECT_FALSE(is_spf_record("v=spf1\t-all"));
  EXPECT_FALSE(is_spf_record(" v=spf1 -all"));
  EXPECT_FALSE(is_spf_record("spf2.0/pra -all"));
  EXPECT_FALSE(is_spf_record(""));
}

SpfRecord parsed(const std::string& text) {
  auto record = parse_spf_record(text);
  EXPECT_TRUE(record.ok()) << text << ": " << (record.ok() ? "" : record.error());
  return record.ok() ? record.value() : SpfRecord{};
}

TEST(SpfParse, MechanismsQualifiersAndArguments) {
  const SpfRecord r = parsed(
      "v=spf1 +all -include:_spf.example.com ~a ?a:mail.example.com/24 mx//64 mx:mx.example.com/28//48 "
      "ptr ptr:example.com ip4:192.0.2.0/24 ip6:2001:db8::/32 exists:%{i}.example.com IP4:198.51.100.1");
  ASSERT_EQ(r.mechanisms.size(), 12u);
  const auto& m = r.mechanisms;
  EXPECT_EQ(m[0].kind, SpfMechanismKind::all);
  EXPECT_EQ(m[0].qualifier, SpfQualifier::pass);
  EXPECT_EQ(m[1].kind, SpfMechanismKind::include);
  EXPECT_EQ(m[1].qualifier, SpfQualifier::fail);
  EXPECT_EQ(m[1].domain_spec, "_spf.example.com");
  EXPECT_EQ(m[2].kind, SpfMechanismKind::a);
  EXPECT_EQ(m[2].qualifier, SpfQualifier::softfail);
  EXPECT_EQ(m[2].domain_spec, "");
  EXPECT_EQ(m[2].cidr4, 32u);
  EXPECT_EQ(m[2].cidr6, 128u);
  EXPECT_EQ(m[3].qualifier, SpfQualifier::neutral);
  EXPECT_EQ(m[3].domain_spec, "mail.example.com");
  EXPECT_EQ(m[3].cidr4, 24u);
  EXPECT_EQ(m[3].cidr6, 128u);
  EXPECT_EQ(m[4].kind, SpfMechanismKind::mx);
  EXPECT_EQ(m[4].qualifier, SpfQualifier::pass);  // no qualifier: "+"
  EXPECT_EQ(m[4].cidr4, 32u);
  EXPECT_EQ(m[4].cidr6, 64u);
  EXPECT_EQ(m[5].domain_spec, "mx.example.com");
  EXPECT_EQ(m[5].cidr4, 28u);
  EXPECT_EQ(m[5].cidr6, 48u);
  EXPECT_EQ(m[6].kind, SpfMechanismKind::ptr);
  EXPECT_EQ(m[7].domain_spec, "example.com");
  EXPECT_EQ(m[8].kind, SpfMechanismKind::ip4);
  EXPECT_EQ(m[8].network, ip("192.0.2.0"));
  EXPECT_EQ(m[8].cidr4, 24u);
  EXPECT_EQ(m[9].kind, SpfMechanismKind::ip6);
  EXPECT_EQ(m[9].network, ip("2001:db8::"));
  EXPECT_EQ(m[9].cidr6, 32u);
  EXPECT_EQ(m[10].kind, SpfMechanismKind::exists);
  EXPECT_EQ(m[10].domain_spec, "%{i}.example.com");
  EXPECT_EQ(m[11].kind, SpfMechanismKind::ip4);  // names are case-insensitive
  EXPECT_EQ(m[11].cidr4, 32u);
  EXPECT_EQ(m[11].text, "IP4:198.51.100.1");
  EXPECT_TRUE(r.has_all);
  EXPECT_FALSE(r.redirect);
  EXPECT_FALSE(r.explanation);
}

TEST(SpfParse, CidrEdges) {
  EXPECT_EQ(parsed("v=spf1 ip4:1.1.1.1/0").mechanisms[0].cidr4, 0u);
  EXPECT_EQ(parsed("v=spf1 ip4:1.2.3.4/32").mechanisms[0].cidr4, 32u);
  EXPECT_EQ(parsed("v=spf1 ip6:::1.1.1.1/0").mechanisms[0].cidr6, 0u);
  EXPECT_EQ(parsed("v=spf1 ip6:CAFE:BABE:8000::/33").mechanisms[0].cidr6, 33u);
  EXPECT_EQ(parsed("v=spf1 ip6:::ffff:1.2.3.4").mechanisms[0].network, ip("::ffff:1.2.3.4"));
  EXPECT_EQ(parsed("v=spf1 a/0").mechanisms[0].cidr4, 0u);
  EXPECT_EQ(parsed("v=spf1 a//0").mechanisms[0].cidr6, 0u);
  EXPECT_EQ(parsed("v=spf1 a//128").mechanisms[0].cidr6, 128u);
  EXPECT_EQ(parsed("v=spf1 a//33").mechanisms[0].cidr6, 33u);  // an IPv6 length, fine
  const auto m = parsed("v=spf1 a/24//64").mechanisms[0];
  EXPECT_EQ(m.cidr4, 24u);
  EXPECT_EQ(m.cidr6, 64u);
}

TEST(SpfParse, Modifiers) {
  const SpfRecord r = parsed("v=spf1 ip4:1.2.3.4 redirect=_spf.example.com exp=explain.%{d}");
  EXPECT_EQ(r.redirect, "_spf.example.com");
  EXPECT_EQ(r.explanation, "explain.%{d}");
  EXPECT_FALSE(r.has_all);
  EXPECT_EQ(parsed("v=spf1 REDIRECT=x.example.com").redirect, "x.example.com");
  EXPECT_EQ(parsed("v=spf1 Exp=x.example.com").explanation, "x.example.com");
  // Unknown modifiers are ignored, whatever their value's macros say.
  for (const char* text :
       {"v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all", "v=spf1 foo= -all", "v=spf1 default=pass",
        "v=spf1 default=+", "v=spf1 op=x.y a=b.example.com", "v=spf1 x=%{c}%{r}%{t}%%"}) {
    const SpfRecord u = parsed(text);
    EXPECT_FALSE(u.redirect) << text;
    EXPECT_FALSE(u.explanation) << text;
  }
  EXPECT_TRUE(parsed("v=spf1 a=b.example.com").mechanisms.empty());  // a modifier named "a"
}

TEST(SpfParse, EmptyRecordAndSpacing) {
  EXPECT_TRUE(parsed("v=spf1").mechanisms.empty());
  EXPECT_TRUE(parsed("V=SPF1   ").mechanisms.empty());
  EXPECT_EQ(parsed("v=spf1   a    -all  ").mechanisms.size(), 2u);
  EXPECT_EQ(parsed("v=spf1 all -all").mechanisms.size(), 2u);
}

TEST(SpfParse, DomainSpecsThatAreValid) {
  for (const char* text : {
           "v=spf1 a:foo:bar/baz.example.com",  // any visible character but %
           "v=spf1 a:foo.example.xn--zckzah",   // toplabel with dashes, matched greedily
           "v=spf1 a:foo.1-2",                  // all-digit toplabel with a dash
           "v=spf1 a:mail.example.com.",        // trailing dot
           "v=spf1 a:.example.com",             // legal syntax, empty label found later
           "v=spf1 a:macro%%percent%_%_space%-url-space.example.com",
           "v=spf1 exists:%{i}.%{l2r-}.user.%{d2}",  // ends in a macro
           "v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all",
           "v=spf1 a:%{H}.bar",
           "v=spf1 include:%{d}",
           "v=spf1 exists:%%",  // "%%" is a macro-expand too
           "v=spf1 -exists:%{L}%{S}%{O}%{D}%{I}%{P}%{H}%{V}.x.example.com",
           "v=spf1 exists:%{d1r+-.,/_=}.example.com",
           "v=spf1 exists:%{dR}.example.com",
           "v=spf1 exists:%{d0002}.example.com",
       }) {
    EXPECT_TRUE(parse_spf_record(text).ok()) << text;
  }
}

TEST(SpfParse, SyntaxErrorsAnywhereArePermanent) {
  // clang-format off
  for (const char* term : {
           "-all.", "-all/8", "-all:foobar", "all:x", "moo", "=all", "+-all", "*all", "!a", "1up=foo",
           "moo.cow/far_out=man:dog/cat", "moo.cow:far_out=man:dog/cat", "ip4", "ip4:", "ip4:1.2.3",
           "ip4:1.2.3.4:8080", "ip4:1.2.3.4/33", "ip4:1.2.3.4/032", "ip4:1.2.3.4//32", "ip4:01.2.3.4",
           "ip4:1.2.3.256", "ip4:1.2.3.4/", "ip4:1.2.3.4.5", "ip4:::1", "ip6", "ip6:", "ip6::CAFE::BABE",
           "ip6:::1.1.1.1/129", "ip6:::1.1.1.1//33", "ip6:fe80::1%eth0", "ip6:1.2.3.4", "ip6:::1/064",
           "a:", "a/33", "a//129", "a/24/64", "a/024", "a/", "a:museum", "a:museum.", "a:abc.123",
           "a:111.222.33.44", "a:example.-com", "a:example.com-", "a:example.com:8080", "a:foo.example.com/",
           "a:foo%{d", "mx:", "mx/33", "mx//129", "mx:abc.123", "include", "include:", "include:ip5.example.com/24",
           "include:%{d}.", "exists", "exists:", "exists:mail.example.com/24", "ptr/0", "ptr:", "ptr:x",
           "redirect:x.example.com", "redirect=", "redirect=-all", "exp=", "exp=-all", "foo=%abc",
           "exists:%(ir).sbl.example.com", "exists:foo%.sbl.example.com", "exists:foo%", "a:%{a}.example.com",
           "exists:%{d0}.example.com", "exists:%{d}%{", "exists:%{dx}.example.com", "exists:%{d2r.x}.example.com",
           "exists:%{c}.example.com", "exists:%{r}.example.com", "exists:%{T}.example.com",
           "exp=%{r}.example.com", "redirect=%{c}.example.com", "a:\xef\xbb\xbfgarbage.example.net", "\x96" "all",
           "a:exa\x01mple.com", "a:foo.example.com\t-all"}) {
    // clang-format on
    const std::string text = std::string("v=spf1 ip4:192.0.2.1 ") + term + " -all";
    auto record = parse_spf_record(text);
    EXPECT_FALSE(record.ok()) << text;
  }
  std::string with_nul = "v=spf1 a:foo";
  with_nul += '\0';
  with_nul += ".example.com -all";
  EXPECT_FALSE(parse_spf_record(with_nul).ok());
}

TEST(SpfParse, RedirectOrExpTwiceIsAnError) {
  EXPECT_FALSE(parse_spf_record("v=spf1 redirect=a.example.com -all redirect=a.example.com").ok());
  EXPECT_FALSE(parse_spf_record("v=spf1 exp=a.example.com -all EXP=b.example.com").ok());
  EXPECT_TRUE(parse_spf_record("v=spf1 foo=1 foo=2 -all").ok());  // unknown ones may repeat
}

TEST(SpfParse, ErrorNamesTheTerm) {
  auto record = parse_spf_record("v=spf1 ip4:192.0.2.1 moo -all");
  ASSERT_FALSE(record.ok());
  EXPECT_NE(record.error().find("\"moo\""), std::string::npos) << record.error();
  auto cidr = parse_spf_record("v=spf1 ip4:1.2.3.4/33");
  ASSERT_FALSE(cidr.ok());
  EXPECT_NE(cidr.error().find("ip4:1.2.3.4/33"), std::string::npos) << cidr.error();
  EXPECT_FALSE(parse_spf_record("not spf").ok());
}

// ------------------------------------------------------------ macros

SpfMacroContext rfc_context() {
  // RFC 7208 section 7.4.
  SpfMacroContext c;
  c.sender = "strong-bad@email.example.com";
  c.local_part = "strong-bad";
  c.sender_domain = "email.example.com";
  c.domain = "email.example.com";
  c.client = ip("192.0.2.3");
  c.helo = "mx.example.org";
  return c;
}

std::string expanded(const std::string& text, const SpfMacroContext& context = rfc_context(),
                     SpfMacroUse use = SpfMacroUse::domain_spec) {
  auto out = expand_spf_macros(text, context, use);
  EXPECT_TRUE(out.ok()) << text << ": " << (out.ok() ? "" : out.error());
  return out.ok() ? out.value() : "<error>";
}

TEST(SpfMacro, Rfc7208Section7_4Examples) {
  EXPECT_EQ(expanded("%{s}"), "strong-bad@email.example.com");
  EXPECT_EQ(expanded("%{o}"), "email.example.com");
  EXPECT_EQ(expanded("%{d}"), "email.example.com");
  EXPECT_EQ(expanded("%{d4}"), "email.example.com");
  EXPECT_EQ(expanded("%{d3}"), "email.example.com");
  EXPECT_EQ(expanded("%{d2}"), "example.com");
  EXPECT_EQ(expanded("%{d1}"), "com");
  EXPECT_EQ(expanded("%{dr}"), "com.example.email");
  EXPECT_EQ(expanded("%{d2r}"), "example.email");
  EXPECT_EQ(expanded("%{l}"), "strong-bad");
  EXPECT_EQ(expanded("%{l-}"), "strong.bad");
  EXPECT_EQ(expanded("%{lr}"), "strong-bad");
  EXPECT_EQ(expanded("%{lr-}"), "bad.strong");
  EXPECT_EQ(expanded("%{l1r-}"), "strong");

  EXPECT_EQ(expanded("%{ir}.%{v}._spf.%{d2}"), "3.2.0.192.in-addr._spf.example.com");
  EXPECT_EQ(expanded("%{lr-}.lp._spf.%{d2}"), "bad.strong.lp._spf.example.com");
  EXPECT_EQ(expanded("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}"), "bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
  EXPECT_EQ(expanded("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}"), "3.2.0.192.in-addr.strong.lp._spf.example.com");
  EXPECT_EQ(expanded("%{d2}.trusted-domains.example.net"), "example.com.trusted-domains.example.net");

  SpfMacroContext v6 = rfc_context();
  v6.client = ip("2001:db8::cb01");
  EXPECT_EQ(expanded("%{ir}.%{v}._spf.%{d2}", v6),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com");
}

TEST(SpfMacro, LettersAndEscapes) {
  SpfMacroContext c = rfc_context();
  EXPECT_EQ(expanded("%{h}", c), "mx.example.org");
  EXPECT_EQ(expanded("%{i}", c), "192.0.2.3");
  EXPECT_EQ(expanded("%{v}", c), "in-addr");
  EXPECT_EQ(expanded("%{p}", c), "unknown");  // no PTR lookups (7.3 allows "unknown")
  c.ptr_name = "mx.example.org";
  EXPECT_EQ(expanded("%{p2}", c), "example.org");
  EXPECT_EQ(expanded("%%%_%-"), "% %20");
  EXPECT_EQ(expanded("macro%%percent%_%_space%-url-space.example.com"),
            "macro%percent  space%20url-space.example.com");
  EXPECT_EQ(expanded("%{D2}.%{V}"), "example.com.in-addr");              // nothing to escape
  EXPECT_EQ(expanded("%{d99999999999999999999}"), "email.example.com");  // more parts than exist
  EXPECT_EQ(expanded("%{d02}"), "example.com");
  EXPECT_EQ(expanded("%{dR}"), "com.example.email");
  c = rfc_context();
  c.local_part = "foo-bar+zip+quux";
  EXPECT_EQ(expanded("%{l2r+-}", c), "bar.foo");  // several delimiters, rejoined with "."
  EXPECT_EQ(expanded("%{l+}", c), "foo-bar.zip.quux");
  c.local_part = "philip-gladstone-test";
  EXPECT_EQ(expanded("%{l2r-}", c), "gladstone.philip");
  c.local_part = "a..b";
  EXPECT_EQ(expanded("%{lr}", c), "b..a");  // empty parts are kept
}

TEST(SpfMacro, UpperCaseLettersUrlEscape) {
  SpfMacroContext c = rfc_context();
  c.local_part = "jack&jill=up";
  EXPECT_EQ(expanded("http://example.com/why.html?l=%{L}", c, SpfMacroUse::explanation),
            "http://example.com/why.html?l=jack%26jill%3Dup");
  c.sender = "a+b c~d@example.com";
  EXPECT_EQ(expanded("%{S}", c), "a%2Bb%20c~d%40example.com");
  c.client = ip("2001:db8::cb01");
  EXPECT_EQ(expanded("%{C}", c, SpfMacroUse::explanation), "2001%3Adb8%3A%3Acb01");
}

TEST(SpfMacro, ExplanationOnlyLetters) {
  SpfMacroContext c = rfc_context();
  c.receiver = "mx.receiver.example";
  c.timestamp = 1700000000;
  EXPECT_EQ(expanded("%{c} to %{r} at %{t}", c, SpfMacroUse::explanation),
            "192.0.2.3 to mx.receiver.example at 1700000000");
  c.client = ip("2001:db8::cb01");
  EXPECT_EQ(expanded("%{c} is queried as %{ir}.%{v}.arpa", c, SpfMacroUse::explanation),
            "2001:db8::cb01 is queried as "
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
  EXPECT_EQ(expanded("This is a test.", c, SpfMacroUse::explanation), "This is a test.");  // dot kept
  for (const char* text : {"%{c}", "%{r}", "%{t}", "%{C}", "a b"}) {
    EXPECT_FALSE(expand_spf_macros(text, c, SpfMacroUse::domain_spec).ok()) << text;
  }
}

TEST(SpfMacro, SyntaxErrors) {
  for (const char* text :
       {"%", "foo%", "%x", "%(ir)", "%{", "%{d", "%{d2", "%{d2r", "%{}", "%{a}", "%{x}", "%{d0}", "%{d00}",
        "%{d2x}", "%{d r}", "%{d.r}", "The %{x}-files.", "caf\xc3\xa9", "tab\there"}) {
    EXPECT_FALSE(expand_spf_macros(text, rfc_context(), SpfMacroUse::explanation).ok()) << text;
  }
}

TEST(SpfMacro, DomainSpecTruncatesFromTheLeft) {
  SpfMacroContext c = rfc_context();
  c.sender_domain = "somewhat.long.exp.example.com";
  // 7 + 8 * 30 + 11 = 258 octets: "foobar." has to go.
  auto out = expand_spf_domain_spec("foobar.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.example.com", c);
  ASSERT_TRUE(out.ok());
  std::string expected;
  for (int i = 0; i < 8; ++i) {
    expected += "somewhat.long.exp.example.com.";
  }
  expected += "example.com";
  EXPECT_EQ(out.value(), expected);
  EXPECT_LE(out.value().size(), 253u);

  c.sender_domain = std::string(60, 'a');
  auto many = expand_spf_domain_spec("%{o}.%{o}.%{o}.%{o}.%{o}.example.com.", c);  // 317 octets
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(many.value(),
            std::string(60, 'a') + "." + std::string(60, 'a') + "." + std::string(60, 'a') + ".example.com");
  const std::string label63(63, 'b');
  const std::string at_limit = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'c');  // 253
  auto exact = expand_spf_domain_spec(at_limit + ".", c);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact.value(), at_limit);
  auto one_over = expand_spf_domain_spec("x" + at_limit, c);  // 254: the first label goes
  ASSERT_TRUE(one_over.ok());
  EXPECT_EQ(one_over.value(), label63 + "." + label63 + "." + std::string(61, 'c'));
  EXPECT_EQ(expand_spf_domain_spec("Mail.Example.COM.", c).value(), "Mail.Example.COM");
}

// ------------------------------------------------------------ check_host() on the zone table

class SpfEval : public ::testing::Test {
 protected:
  SpfVerdict mail_from(const std::string& client, const std::string& sender, SpfLimits limits = {},
                       const std::string& helo = kHelo) {
    zone.queries.clear();
    return run(check_spf_mail_from(zone, ip(client), helo, sender, limits));
  }
  SpfVerdict helo(const std::string& client, const std::string& name) {
    zone.queries.clear();
    return run(check_spf_helo(zone, ip(client), name));
  }
  SpfVerdict host(SpfRequest request) {
    zone.queries.clear();
    return run(check_host(zone, std::move(request)));
  }
  SpfResult result(const std::string& record, const std::string& client = "192.0.2.10") {
    zone = ZoneResolver();
    zone.add_txt("example.com", {record});
    extra_records();
    return mail_from(client, "user@example.com").result;
  }
  virtual void extra_records() {}

  ZoneResolver zone;
};

TEST_F(SpfEval, QualifiersAndDefault) {
  EXPECT_EQ(result("v=spf1 all"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 +all"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 ~all"), SpfResult::softfail);
  EXPECT_EQ(result("v=spf1 ?all"), SpfResult::neutral);
  EXPECT_EQ(result("v=spf1 all -all"), SpfResult::pass);  // the first match decides
  EXPECT_EQ(result("v=spf1"), SpfResult::neutral);
  EXPECT_EQ(result("v=spf1 ip4:198.51.100.1"), SpfResult::neutral);
  EXPECT_EQ(result("v=spf1 default=fail"), SpfResult::neutral);  // obsolete, ignored

  zone = ZoneResolver();
  zone.add_txt("example.com", {"v=spf1 ip4:198.51.100.1"});
  const SpfVerdict v = mail_from("192.0.2.10", "user@example.com");
  EXPECT_EQ(v.mechanism, "default");
  EXPECT_EQ(v.domain, "example.com");
  EXPECT_EQ(v.dns_lookups, 0u);
  EXPECT_EQ(zone.queries, std::vector<std::string>{"TXT example.com"});
}

TEST_F(SpfEval, Ip4AndIp6WithCidr) {
  EXPECT_EQ(result("v=spf1 ip4:192.0.2.0/24 -all"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 ip4:192.0.2.11 -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 ip4:192.0.2.10 -all"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 ip4:192.0.2.8/30 -all"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 ip4:192.0.2.12/30 -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 ip4:192.0.2.0/31 -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 ip4:1.1.1.1/0 -all"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 ip4:192.0.2.1/28 -all"), SpfResult::pass);  // host bits ignored
  EXPECT_EQ(result("v=spf1 ip4:192.0.2.17/28 -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 ip6:::/0 -all"), SpfResult::fail);  // IPv4 client never matches ip6
  EXPECT_EQ(result("v=spf1 ip6:2001:db8::/32 -all", "2001:db8:1::5"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 ip6:2001:db8::/33 -all", "2001:db8:8000::5"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 ip6:CAFE:BABE:8000::/33 -all", "cafe:babe:8000::"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 ip6:2001:db8::1/128 -all", "2001:db8::1"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 ip6:::1.1.1.1/0 -all", "deaf:babe::cab:fee"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 ip4:0.0.0.0/0 -all", "2001:db8::1"), SpfResult::fail);
  // An IPv4-mapped IPv6 client is an IPv4 client.
  EXPECT_EQ(result("v=spf1 -ip4:1.2.3.4 ip6:::FFFF:1.2.3.4", "::ffff:1.2.3.4"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 ip6:::1.1.1.1/0", "::ffff:1.2.3.4"), SpfResult::neutral);
  EXPECT_EQ(result("v=spf1 ip4:1.2.3.4 -all", "::ffff:1.2.3.4"), SpfResult::pass);
}

class SpfEvalA : public SpfEval {
 protected:
  void extra_records() override {
    zone.add_addr("example.com", {"192.0.2.10", "2001:db8::10"});
    zone.add_addr("multi.example.com", {"198.51.100.1", "192.0.2.10"});
    zone.add_addr("v6only.example.com", {"2001:db8::10"});
    zone.add_addr("v4only.example.com", {"192.0.2.10"});
    zone.add_addr("near.example.com", {"192.0.2.99"});
    zone.add_name("empty.example.com");
    zone.fail("broken.example.com");
  }
};

TEST_F(SpfEvalA, AMechanism) {
  EXPECT_EQ(result("v=spf1 a -all"), SpfResult::pass);                    // the current domain
  EXPECT_EQ(result("v=spf1 a:multi.example.com -all"), SpfResult::pass);  // any address
  EXPECT_EQ(result("v=spf1 a:near.example.com -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 a:near.example.com/24 -all"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 a:near.example.com/25 -all"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 a:near.example.com/26 -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 a:near.example.com//0 -all"), SpfResult::fail);   // v6 length, v4 client
  EXPECT_EQ(result("v=spf1 a:v6only.example.com/0 -all"), SpfResult::fail);  // no A: no match
  EXPECT_EQ(result("v=spf1 a:nx.example.com/0 -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 a:empty.example.com/0 -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 a:broken.example.com -all"), SpfResult::temperror);
  EXPECT_EQ(result("v=spf1 ?a:near.example.com/24 -all"), SpfResult::neutral);
  // IPv6 clients compare AAAA records with the IPv6 length.
  EXPECT_EQ(result("v=spf1 a -all", "2001:db8::10"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 a -all", "2001:db8::11"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 a/0 -all", "2001:db8::11"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 a//64 -all", "2001:db8::11"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 a/24//64 -all", "2001:db8::11"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 a:v4only.example.com//0 -all", "2001:db8::11"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 a:v6only.example.com//0 -all", "2001:db8::11"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 a:v6only.example.com//0 -all", "::ffff:192.0.2.10"), SpfResult::fail);
}

TEST_F(SpfEvalA, AQueriesTheExpandedNameAndCountsVoids) {
  zone = ZoneResolver();
  extra_records();
  zone.add_txt("example.com", {"v=spf1 a:v6only.example.com a:nx.example.com -all"});
  const SpfVerdict v = mail_from("192.0.2.10", "user@example.com");
  EXPECT_EQ(v.result, SpfResult::fail);
  EXPECT_EQ(v.dns_lookups, 2u);
  EXPECT_EQ(v.void_lookups, 2u);  // AAAA-only answers no A: void for an IPv4 client
  EXPECT_EQ(v.mechanism, "-all");
  EXPECT_EQ(zone.queries,
            (std::vector<std::string>{"TXT example.com", "ADDR v6only.example.com", "ADDR nx.example.com"}));
}

TEST_F(SpfEval, MxMechanism) {
  auto setup = [this](const std::string& record) {
    zone = ZoneResolver();
    zone.add_txt("example.com", {record});
    zone.add_mx("example.com", {{20, "mx2.example.com"}, {10, "mx1.example.com"}});
    zone.add_addr("mx1.example.com", {"192.0.2.20", "2001:db8::20"});
    zone.add_addr("mx2.example.com", {"192.0.2.21"});
    zone.add_addr("example.com", {"192.0.2.30"});  // an A at the domain is not an MX
    zone.add_mx("nullmx.example.com", {{0, ""}});
    zone.add_mx("mxfail.example.com", {{10, "broken.example.com"}});
    zone.fail("broken.example.com");
    zone.fail("servfail.example.com");
    zone.add_mx("nohost.example.com", {{10, "gone.example.com"}});
  };
  auto check = [&](const std::string& record, const std::string& client) {
    setup(record);
    return mail_from(client, "user@example.com");
  };
  EXPECT_EQ(check("v=spf1 mx -all", "192.0.2.20").result, SpfResult::pass);
  EXPECT_EQ(check("v=spf1 mx -all", "192.0.2.21").result, SpfResult::pass);
  EXPECT_EQ(check("v=spf1 mx -all", "192.0.2.22").result, SpfResult::fail);
  EXPECT_EQ(check("v=spf1 mx/30 -all", "192.0.2.22").result, SpfResult::pass);
  EXPECT_EQ(check("v=spf1 mx -all", "192.0.2.30").result, SpfResult::fail);  // no fallback to A
  EXPECT_EQ(check("v=spf1 mx -all", "2001:db8::20").result, SpfResult::pass);
  EXPECT_EQ(check("v=spf1 mx -all", "2001:db8::21").result, SpfResult::fail);
  EXPECT_EQ(check("v=spf1 mx//64 -all", "2001:db8::21").result, SpfResult::pass);
  EXPECT_EQ(check("v=spf1 mx:nullmx.example.com -all", "192.0.2.20").result, SpfResult::fail);
  EXPECT_EQ(check("v=spf1 mx:nomx.example.com ?all", "192.0.2.20").result, SpfResult::neutral);
  EXPECT_EQ(check("v=spf1 mx:servfail.example.com -all", "192.0.2.20").result, SpfResult::temperror);
  EXPECT_EQ(check("v=spf1 mx:mxfail.example.com -all", "192.0.2.20").result, SpfResult::temperror);
  EXPECT_EQ(check("v=spf1 mx:nohost.example.com -all", "192.0.2.20").result, SpfResult::fail);

  const SpfVerdict v = check("v=spf1 mx -all", "192.0.2.21");
  EXPECT_EQ(v.dns_lookups, 1u);  // one term, however many MX hosts
  EXPECT_EQ(v.mechanism, "mx");
  // All hosts are looked up, in preference order.
  EXPECT_EQ(zone.queries, (std::vector<std::string>{"TXT example.com", "MX example.com",
                                                    "ADDR mx1.example.com", "ADDR mx2.example.com"}));
  const SpfVerdict null_mx = check("v=spf1 mx:nullmx.example.com -all", "192.0.2.20");
  EXPECT_EQ(null_mx.void_lookups, 0u);  // the null MX is not looked up
  EXPECT_EQ(zone.queries, (std::vector<std::string>{"TXT example.com", "MX nullmx.example.com"}));
}

TEST_F(SpfEval, MxNamesLimitAtTenAndEleven) {
  auto setup = [this](unsigned count) {
    zone = ZoneResolver();
    zone.add_txt("example.com", {"v=spf1 mx -all"});
    std::vector<MxRecord> records;
    for (unsigned i = 0; i < count; ++i) {
      records.push_back({static_cast<std::uint16_t>(i), "mx" + std::to_string(i) + ".example.com"});
      zone.add_addr("mx" + std::to_string(i) + ".example.com", {"198.51.100." + std::to_string(i + 1)});
    }
    zone.add_mx("example.com", records);
  };
  setup(10);
  EXPECT_EQ(mail_from("198.51.100.10", "u@example.com").result, SpfResult::pass);
  setup(11);
  const SpfVerdict over = mail_from("198.51.100.1", "u@example.com");  // even though mx0 would match
  EXPECT_EQ(over.result, SpfResult::permerror);
  EXPECT_EQ(over.mechanism, "mx");
  EXPECT_NE(over.reason.find("11 MX records"), std::string::npos) << over.reason;
  setup(3);
  EXPECT_EQ(mail_from("198.51.100.3", "u@example.com", SpfLimits{10, 2, 3}).result, SpfResult::pass);
  setup(4);
  EXPECT_EQ(mail_from("198.51.100.3", "u@example.com", SpfLimits{10, 2, 3}).result, SpfResult::permerror);
}

TEST_F(SpfEval, ExistsMechanism) {
  zone.add_txt("example.com", {"v=spf1 exists:%{ir}.%{v}.allow.example.com -all"});
  zone.add_addr("10.2.0.192.in-addr.allow.example.com", {"127.0.0.2"});
  zone.add_addr("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.allow.example.com",
                {"127.0.0.2"});
  zone.add_addr("6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.allow.example.com",
                {"2001:db8::6"});  // AAAA only: exists looks for A
  EXPECT_EQ(mail_from("192.0.2.10", "user@example.com").result, SpfResult::pass);
  EXPECT_EQ(mail_from("192.0.2.11", "user@example.com").result, SpfResult::fail);
  EXPECT_EQ(zone.queries.back(), "ADDR 11.2.0.192.in-addr.allow.example.com");
  EXPECT_EQ(mail_from("2001:db8::1", "user@example.com").result, SpfResult::pass);  // A, for IPv6 too
  const SpfVerdict aaaa_only = mail_from("2001:db8::6", "user@example.com");
  EXPECT_EQ(aaaa_only.result, SpfResult::fail);
  EXPECT_EQ(aaaa_only.void_lookups, 1u);
  EXPECT_EQ(mail_from("::ffff:192.0.2.10", "user@example.com").result, SpfResult::pass);

  zone = ZoneResolver();
  zone.add_txt("example.com", {"v=spf1 exists:%{l1r-}.users.example.com -all"});
  zone.add_addr("john.users.example.com", {"127.0.0.2"});
  EXPECT_EQ(mail_from("192.0.2.10", "john-smith@example.com").result, SpfResult::pass);  // "john"
  EXPECT_EQ(mail_from("192.0.2.10", "smith-john@example.com").result, SpfResult::fail);  // "smith"

  zone = ZoneResolver();
  zone.add_txt("example.com", {"v=spf1 exists:err.example.com -all"});
  zone.fail("err.example.com");
  EXPECT_EQ(mail_from("192.0.2.10", "user@example.com").result, SpfResult::temperror);
}

TEST_F(SpfEval, PtrNeverMatchesButCounts) {
  zone.add_txt("example.com", {"v=spf1 ptr ptr:example.com -all"});
  const SpfVerdict v = mail_from("192.0.2.10", "user@example.com");
  EXPECT_EQ(v.result, SpfResult::fail);
  EXPECT_EQ(v.dns_lookups, 2u);
  EXPECT_EQ(zone.queries, std::vector<std::string>{"TXT example.com"});
}

class SpfEvalInclude : public SpfEval {
 protected:
  void extra_records() override {
    zone.add_txt("pass.example.net", {"v=spf1 ip4:192.0.2.10 -all"});
    zone.add_txt("fail.example.net", {"v=spf1 -all"});
    zone.add_txt("softfail.example.net", {"v=spf1 ~all"});
    zone.add_txt("neutral.example.net", {"v=spf1 ?all"});
    zone.add_txt("default.example.net", {"v=spf1 ip4:198.51.100.1"});
    zone.add_txt("perm.example.net", {"v=spf1 moo -all"});
    zone.add_txt("twice.example.net", {"v=spf1 -all", "v=spf1 +all"});
    zone.add_txt("notspf.example.net", {"v=spfl am not an SPF record"});
    zone.add_name("empty.example.net");
    zone.fail("temp.example.net");
    zone.add_txt("deeper.example.net", {"v=spf1 include:pass.example.net -all"});
    zone.add_txt("deeptemp.example.net", {"v=spf1 include:temp.example.net -all"});
  }
};

TEST_F(SpfEvalInclude, IncludeSemantics) {
  EXPECT_EQ(result("v=spf1 include:pass.example.net -all"), SpfResult::pass);
  EXPECT_EQ(result("v=spf1 -include:pass.example.net +all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 ~include:pass.example.net +all"), SpfResult::softfail);
  EXPECT_EQ(result("v=spf1 ?include:pass.example.net +all"), SpfResult::neutral);
  EXPECT_EQ(result("v=spf1 include:deeper.example.net -all"), SpfResult::pass);
  // fail, softfail, neutral: no match.
  EXPECT_EQ(result("v=spf1 include:fail.example.net ~all"), SpfResult::softfail);
  EXPECT_EQ(result("v=spf1 include:softfail.example.net -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 include:neutral.example.net -all"), SpfResult::fail);
  EXPECT_EQ(result("v=spf1 include:default.example.net -all"), SpfResult::fail);
  // none and permerror: permerror; temperror propagates.
  EXPECT_EQ(result("v=spf1 include:perm.example.net +all"), SpfResult::permerror);
  EXPECT_EQ(result("v=spf1 include:twice.example.net +all"), SpfResult::permerror);
  EXPECT_EQ(result("v=spf1 include:notspf.example.net +all"), SpfResult::permerror);
  EXPECT_EQ(result("v=spf1 include:empty.example.net +all"), SpfResult::permerror);
  EXPECT_EQ(result("v=spf1 include:nx.example.net +all"), SpfResult::permerror);
  EXPECT_EQ(result("v=spf1 include:temp.example.net +all"), SpfResult::temperror);
  EXPECT_EQ(result("v=spf1 include:deeptemp.example.net +all"), SpfResult::temperror);
  EXPECT_EQ(result("v=spf1 include:a..example.net +all"), SpfResult::permerror);  // not a name
  EXPECT_EQ(result("v=spf1 include:single%{d1} +all"), SpfResult::permerror);     // "singlecom"

  zone = ZoneResolver();
  extra_records();
  zone.add_txt("example.com", {"v=spf1 include:pass.example.net -all"});
  const SpfVerdict v = mail_from("192.0.2.10", "user@example.com");
  EXPECT_EQ(v.mechanism, "include:pass.example.net");
  EXPECT_EQ(v.dns_lookups, 1u);
  const SpfVerdict temp = [&] {
    zone.add_txt("t.example.com", {"v=spf1 include:temp.example.net -all"});
    return mail_from("192.0.2.10", "user@t.example.com");
  }();
  EXPECT_EQ(temp.mechanism, "include:temp.example.net");
  EXPECT_NE(temp.reason.find("SERVFAIL"), std::string::npos) << temp.reason;
}

TEST_F(SpfEvalInclude, IncludeUsesTheTargetAsDomainButKeepsTheSender) {
  zone.add_txt("example.com", {"v=spf1 include:inc.example.net -all"});
  zone.add_txt("inc.example.net", {"v=spf1 exists:%{d}.%{o}.%{l}.check.example.net -all"});
  zone.add_addr("inc.example.net.example.com.user.check.example.net", {"127.0.0.2"});
  EXPECT_EQ(mail_from("192.0.2.10", "user@example.com").result, SpfResult::pass);
}

TEST_F(SpfEval, Redirect) {
  zone.add_txt("example.com", {"v=spf1 ip4:198.51.100.1 redirect=_spf.example.net"});
  zone.add_txt("_spf.example.net", {"v=spf1 ip4:192.0.2.0/24 ~all"});
  EXPECT_EQ(mail_from("198.51.100.1", "user@example.com").result, SpfResult::pass);
  const SpfVerdict v = mail_from("192.0.2.10", "user@example.com");
  EXPECT_EQ(v.result, SpfResult::pass);
  EXPECT_EQ(v.mechanism, "ip4:192.0.2.0/24");
  EXPECT_EQ(v.dns_lookups, 1u);
  EXPECT_EQ(mail_from("203.0.113.1", "user@example.com").result, SpfResult::softfail);

  // The target's domain becomes %{d}.
  zone.add_txt("macro.example.com", {"v=spf1 redirect=%{d}.d.example.net."});
  zone.add_txt("macro.example.com.d.example.net", {"v=spf1 exists:%{d}.x.example.net -all"});
  zone.add_addr("macro.example.com.d.example.net.x.example.net", {"127.0.0.2"});
  EXPECT_EQ(mail_from("203.0.113.1", "user@macro.example.com").result, SpfResult::pass);

  // A redirect to a domain without a record is a permerror, not none.
  zone.add_txt("nowhere.example.com", {"v=spf1 redirect=nx.example.net"});
  EXPECT_EQ(mail_from("203.0.113.1", "user@nowhere.example.com").result, SpfResult::permerror);
  zone.add_txt("badname.example.com", {"v=spf1 redirect=a..example.net"});
  EXPECT_EQ(mail_from("203.0.113.1", "user@badname.example.com").result, SpfResult::permerror);
  zone.add_txt("temp.example.com", {"v=spf1 redirect=broken.example.net"});
  zone.fail("broken.example.net");
  EXPECT_EQ(mail_from("203.0.113.1", "user@temp.example.com").result, SpfResult::temperror);

  // "all" anywhere makes redirect ignored (and uncounted).
  zone.add_txt("withall.example.com", {"v=spf1 redirect=_spf.example.net ~all"});
  const SpfVerdict ignored = mail_from("192.0.2.10", "user@withall.example.com");
  EXPECT_EQ(ignored.result, SpfResult::softfail);
  EXPECT_EQ(ignored.dns_lookups, 0u);
  // After all mechanisms, wherever it is written.
  zone.add_txt("first.example.com", {"v=spf1 redirect=_spf.example.net ip4:203.0.113.1 -ip4:192.0.2.10"});
  EXPECT_EQ(mail_from("192.0.2.10", "user@first.example.com").result, SpfResult::fail);
  EXPECT_EQ(mail_from("203.0.113.1", "user@first.example.com").result, SpfResult::pass);
}

TEST_F(SpfEval, DnsLookupLimitAtTenAndEleven) {
  zone.add_addr("h.example.com", {"198.51.100.1"});
  auto record = [](int terms) {
    std::string text = "v=spf1";
    for (int i = 0; i < terms; ++i) {
      text += " a:h.example.com";
    }
    return text + " ip4:192.0.2.10 -all";
  };
  zone.add_txt("ten.example.com", {record(10)});
  zone.add_txt("eleven.example.com", {record(11)});
  const SpfVerdict ten = mail_from("192.0.2.10", "u@ten.example.com");
  EXPECT_EQ(ten.result, SpfResult::pass);
  EXPECT_EQ(ten.dns_lookups, 10u);
  const SpfVerdict eleven = mail_from("192.0.2.10", "u@eleven.example.com");
  EXPECT_EQ(eleven.result, SpfResult::permerror);
  EXPECT_EQ(eleven.dns_lookups, 11u);
  EXPECT_EQ(eleven.mechanism, "a:h.example.com");
  EXPECT_NE(eleven.reason.find("more than 10 DNS-querying terms"), std::string::npos) << eleven.reason;
  EXPECT_EQ(zone.queries.size(), 11u);  // TXT + 10 A: the 11th term sent nothing

  // Terms after the match are not evaluated, so they do not count.
  zone.add_txt("early.example.com", {"v=spf1 ip4:192.0.2.10 " + record(20)});
  EXPECT_EQ(mail_from("192.0.2.10", "u@early.example.com").result, SpfResult::pass);

  // Include, mx, exists, ptr and redirect count too, nested ones included.
  zone.add_mx("example.com", {{10, "h.example.com"}});
  zone.add_txt("i1.example.com", {"v=spf1 a:h.example.com mx:example.com ptr ~exists:h.example.com"});
  zone.add_txt("i2.example.com", {"v=spf1 include:i1.example.com redirect=i3.example.com"});
  zone.add_txt("i3.example.com", {"v=spf1 a:h.example.com ip4:192.0.2.10"});
  // include:i2, include:i1, a, mx, ptr, exists, redirect, a = 8
  zone.add_txt("nested.example.com", {"v=spf1 include:i2.example.com a:h.example.com -all"});
  const SpfVerdict nested = mail_from("192.0.2.10", "u@nested.example.com");
  EXPECT_EQ(nested.result, SpfResult::pass);
  EXPECT_EQ(nested.dns_lookups, 8u);
  // Two more in front: 10, then ip4 matches.
  zone.add_txt("at.example.com", {"v=spf1 a:h.example.com a:h.example.com include:i2.example.com "
                                  "ip4:192.0.2.11 -all"});
  const SpfVerdict at = mail_from("192.0.2.11", "u@at.example.com");
  EXPECT_EQ(at.result, SpfResult::pass);
  EXPECT_EQ(at.dns_lookups, 10u);
  // Three: the 11th is i3's a, deep inside include and redirect.
  zone.add_txt("past.example.com", {"v=spf1 a:h.example.com a:h.example.com a:h.example.com "
                                    "include:i2.example.com ip4:192.0.2.11 -all"});
  const SpfVerdict past = mail_from("192.0.2.11", "u@past.example.com");
  EXPECT_EQ(past.result, SpfResult::permerror);
  EXPECT_EQ(past.dns_lookups, 11u);
  EXPECT_EQ(past.mechanism, "a:h.example.com");
  zone.add_txt("redir.example.com", {"v=spf1 a:h.example.com a:h.example.com a:h.example.com a:h.example.com "
                                     "a:h.example.com a:h.example.com a:h.example.com a:h.example.com "
                                     "a:h.example.com a:h.example.com redirect=i3.example.com"});
  const SpfVerdict redir = mail_from("192.0.2.10", "u@redir.example.com");  // the redirect is the 11th
  EXPECT_EQ(redir.result, SpfResult::permerror);
  EXPECT_EQ(redir.mechanism, "redirect=i3.example.com");

  // The limit is configurable.
  EXPECT_EQ(mail_from("192.0.2.10", "u@ten.example.com", SpfLimits{9, 2, 10}).result, SpfResult::permerror);
  EXPECT_EQ(mail_from("192.0.2.10", "u@eleven.example.com", SpfLimits{11, 2, 10}).result, SpfResult::pass);
}

TEST_F(SpfEval, VoidLookupLimitAtTwoAndThree) {
  zone.add_name("empty.example.com");
  zone.add_txt("two.example.com", {"v=spf1 a:nx1.example.com a:empty.example.com ?all"});
  zone.add_txt("three.example.com", {"v=spf1 a:nx1.example.com a:empty.example.com a:nx3.example.com ?all"});
  const SpfVerdict two = mail_from("192.0.2.10", "u@two.example.com");
  EXPECT_EQ(two.result, SpfResult::neutral);
  EXPECT_EQ(two.void_lookups, 2u);
  const SpfVerdict three = mail_from("192.0.2.10", "u@three.example.com");
  EXPECT_EQ(three.result, SpfResult::permerror);
  EXPECT_EQ(three.void_lookups, 3u);
  EXPECT_EQ(three.mechanism, "a:nx3.example.com");
  EXPECT_NE(three.reason.find("more than 2 void lookups"), std::string::npos) << three.reason;

  // mx's MX query and each MX host's address query, exists, and include
  // targets' TXT all count.
  zone.add_mx("mxvoid.example.com", {{10, "nx-a.example.com"}, {20, "nx-b.example.com"}});
  zone.add_txt("mx.example.com", {"v=spf1 mx:mxvoid.example.com ?all"});
  EXPECT_EQ(mail_from("192.0.2.10", "u@mx.example.com").result, SpfResult::neutral);
  zone.add_txt("mx3.example.com", {"v=spf1 mx:mxvoid.example.com mx:nomx.example.com ?all"});
  EXPECT_EQ(mail_from("192.0.2.10", "u@mx3.example.com").result, SpfResult::permerror);
  zone.add_txt("exists.example.com", {"v=spf1 exists:nx1.example.com exists:nx2.example.com "
                                      "exists:empty.example.com ?all"});
  EXPECT_EQ(mail_from("192.0.2.10", "u@exists.example.com").result, SpfResult::permerror);
  zone.add_txt("inc.example.com",
               {"v=spf1 a:nx1.example.com a:nx2.example.com include:nx3.example.com ?all"});
  const SpfVerdict inc = mail_from("192.0.2.10", "u@inc.example.com");
  EXPECT_EQ(inc.result, SpfResult::permerror);
  EXPECT_EQ(inc.void_lookups, 3u);

  // The exp= lookup is never a void lookup.
  zone.add_txt("exp.example.com", {"v=spf1 a:nx1.example.com a:nx2.example.com exp=nx3.example.com -all"});
  const SpfVerdict exp = mail_from("192.0.2.10", "u@exp.example.com");
  EXPECT_EQ(exp.result, SpfResult::fail);
  EXPECT_EQ(exp.void_lookups, 2u);
  EXPECT_EQ(exp.explanation, "");

  // Configurable.
  EXPECT_EQ(mail_from("192.0.2.10", "u@two.example.com", SpfLimits{10, 1, 10}).result, SpfResult::permerror);
  EXPECT_EQ(mail_from("192.0.2.10", "u@three.example.com", SpfLimits{10, 3, 10}).result, SpfResult::neutral);
}

TEST_F(SpfEval, LoopsEndInPermerror) {
  zone.add_txt("self.example.com", {"v=spf1 include:self.example.com -all"});
  zone.add_txt("a.example.com", {"v=spf1 include:b.example.com -all"});
  zone.add_txt("b.example.com", {"v=spf1 include:a.example.com -all"});
  zone.add_txt("r.example.com", {"v=spf1 ip4:198.51.100.1 redirect=r.example.com"});
  zone.add_txt("m.example.com", {"v=spf1 include:%{d} -all"});
  for (const char* sender : {"u@self.example.com", "u@a.example.com", "u@r.example.com", "u@m.example.com"}) {
    const SpfVerdict v = mail_from("192.0.2.10", sender);
    EXPECT_EQ(v.result, SpfResult::permerror) << sender;
    EXPECT_EQ(v.dns_lookups, 11u) << sender;
  }
  // Past the recursion cap even with a huge lookup limit.
  const SpfVerdict deep = mail_from("192.0.2.10", "u@self.example.com", SpfLimits{1000000, 2, 10});
  EXPECT_EQ(deep.result, SpfResult::permerror);
  EXPECT_NE(deep.reason.find("nested deeper than 20"), std::string::npos) << deep.reason;
}

TEST_F(SpfEval, RecordSelection) {
  zone.add_txt("two.example.com", {"v=spf1 -all", "V=sPf1 +all"});
  zone.add_txt("same.example.com", {"v=spf1 -all", "v=spf1 -all"});
  zone.add_txt("mixed.example.com", {"google-site-verification=x", "v=spf1 +all", "v=spf10 -all", "\x96"});
  zone.add_txt("other.example.com", {"v=spf10 -all", "spf2.0/pra -all"});
  zone.add_name("empty.example.com");
  zone.add_txt("case.example.com", {"v=SpF1 ~all"});
  zone.add_txt("nonascii.example.com", {"v=spf1 a:\xef\xbb\xbfgarbage.example.net -all"});
  zone.add_txt("late-error.example.com", {"v=spf1 ip4:192.0.2.10 -all moo"});
  zone.fail("broken.example.com");
  EXPECT_EQ(mail_from("192.0.2.10", "u@two.example.com").result, SpfResult::permerror);
  EXPECT_EQ(mail_from("192.0.2.10", "u@same.example.com").result, SpfResult::permerror);
  EXPECT_EQ(mail_from("192.0.2.10", "u@mixed.example.com").result, SpfResult::pass);
  EXPECT_EQ(mail_from("192.0.2.10", "u@other.example.com").result, SpfResult::none);
  EXPECT_EQ(mail_from("192.0.2.10", "u@empty.example.com").result, SpfResult::none);
  EXPECT_EQ(mail_from("192.0.2.10", "u@nx.example.com").result, SpfResult::none);
  EXPECT_EQ(mail_from("192.0.2.10", "u@case.example.com").result, SpfResult::softfail);
  EXPECT_EQ(mail_from("192.0.2.10", "u@nonascii.example.com").result, SpfResult::permerror);
  const SpfVerdict late = mail_from("192.0.2.10", "u@late-error.example.com");
  EXPECT_EQ(late.result, SpfResult::permerror);  // syntax is checked before evaluation
  EXPECT_NE(late.reason.find("moo"), std::string::npos) << late.reason;
  const SpfVerdict temp = mail_from("192.0.2.10", "u@broken.example.com");
  EXPECT_EQ(temp.result, SpfResult::temperror);
  EXPECT_NE(temp.reason.find("SERVFAIL"), std::string::npos) << temp.reason;
}

TEST_F(SpfEval, DomainsThatAreNotCheckedAreNone) {
  zone.add_txt("example.com", {"v=spf1 -all"});
  const std::string long_label(64, 'a');
  const std::string ok_label(63, 'a');
  zone.add_txt(ok_label + ".example.com", {"v=spf1 -all"});
  EXPECT_EQ(mail_from("192.0.2.10", "u@" + ok_label + ".example.com").result, SpfResult::fail);
  for (const std::string& sender :
       {"u@" + long_label + ".example.com", std::string("u@a...example.com"), std::string("foo@[1.2.3.5]"),
        std::string("u@com"), std::string("u@"), std::string("u@192.0.2.1"), std::string("u@.example.com")}) {
    const SpfVerdict v = mail_from("192.0.2.10", sender);
    EXPECT_EQ(v.result, SpfResult::none) << sender;
    EXPECT_TRUE(zone.queries.empty()) << sender;
  }
  EXPECT_EQ(helo("192.0.2.10", "[192.0.2.10]").result, SpfResult::none);
  EXPECT_EQ(helo("192.0.2.10", "OEMCOMPUTER").result, SpfResult::none);
  EXPECT_EQ(helo("192.0.2.10", "192.0.2.10").result, SpfResult::none);
  EXPECT_TRUE(zone.queries.empty());
  EXPECT_EQ(mail_from("192.0.2.10", "", {}, "A2345678").result, SpfResult::none);  // null sender, bad HELO
}

TEST_F(SpfEval, HeloIdentityAndNullSender) {
  zone.add_txt("mail.example.org", {"v=spf1 exists:%{l}.%{o}.%{d}.%{h}.check.example.org -all"});
  zone.add_addr("postmaster.mail.example.org.mail.example.org.mail.example.org.check.example.org",
                {"127.0.0.2"});
  const SpfVerdict h = helo("192.0.2.10", "mail.example.org");
  EXPECT_EQ(h.result, SpfResult::pass);
  EXPECT_EQ(h.domain, "mail.example.org");
  EXPECT_EQ(helo("192.0.2.10", "Mail.Example.ORG.").result, SpfResult::pass);
  const SpfVerdict null_sender = mail_from("192.0.2.10", "", {}, "mail.example.org");
  EXPECT_EQ(null_sender.result, SpfResult::pass);
  EXPECT_EQ(null_sender.domain, "mail.example.org");
  EXPECT_EQ(mail_from("192.0.2.10", "<>", {}, "mail.example.org").result, SpfResult::pass);
}

TEST_F(SpfEval, SenderForms) {
  zone.add_txt("example.net", {"v=spf1 -all exp=exp.example.net"});
  zone.add_txt("exp.example.net", {"%{l} %{s} %{o} %{h}"});
  // No local part: postmaster (4.3).
  EXPECT_EQ(mail_from("192.0.2.10", "@example.net").explanation,
            "postmaster postmaster@example.net example.net mail.example.org");
  // No "@": the whole thing is the domain.
  EXPECT_EQ(mail_from("192.0.2.10", "example.net").explanation,
            "postmaster postmaster@example.net example.net mail.example.org");
  EXPECT_EQ(mail_from("192.0.2.10", "<a.b@example.net>").explanation,
            "a.b a.b@example.net example.net "
            "mail.example.org");
  // The last "@" separates the domain; a trailing dot is not part of it.
  EXPECT_EQ(mail_from("192.0.2.10", "\"a@b\"@example.net.").explanation,
            "\"a@b\" \"a@b\"@example.net example.net mail.example.org");
  // Spaces are legal in a local-part; expanding them is not a syntax error.
  zone.add_txt("e8.example.net", {"v=spf1 -all exp=msg8.%{D2}"});
  zone.add_txt("msg8.example.net", {"%{l} in implementation"});
  EXPECT_EQ(mail_from("192.0.2.10", "Macro Error@e8.example.net").explanation,
            "Macro Error in implementation");
  // Whatever the sender holds, reason and explanation are printable.
  EXPECT_EQ(mail_from("192.0.2.10", "a\r\nb\x7f@e8.example.net").explanation,
            "a\\x0D\\x0Ab\\x7F in implementation");
  const SpfVerdict odd = mail_from("192.0.2.10",
                                   "u@\x01"
                                   "bad.example.net");
  EXPECT_EQ(odd.result, SpfResult::none);
  EXPECT_EQ(odd.reason, "\\x01bad.example.net does not exist");
}

TEST_F(SpfEval, CaseAndTrailingDots) {
  zone.add_txt("example.com",
               {"V=SPF1 -IP4:198.51.100.1 INCLUDE:Inc.Example.NET. A:Host.EXAMPLE.com. MX -ALL"});
  zone.add_txt("inc.example.net", {"v=spf1 ip4:192.0.2.1 -all"});
  zone.add_addr("host.example.com", {"192.0.2.2"});
  zone.add_mx("example.com", {{10, "host.example.com"}});
  EXPECT_EQ(mail_from("192.0.2.1", "user@EXAMPLE.Com.").result, SpfResult::pass);
  EXPECT_EQ(mail_from("192.0.2.2", "user@example.com").result, SpfResult::pass);
  EXPECT_EQ(mail_from("198.51.100.1", "user@example.com").result, SpfResult::fail);
  EXPECT_EQ(mail_from("192.0.2.3", "user@example.com").result, SpfResult::fail);
}

TEST_F(SpfEval, TargetNamesThatAreNotNamesDoNotMatch) {
  zone.add_txt("example.com", {"v=spf1 a:%{H}.bar -all"});
  // "%" from the HELO URL-escapes to "%25": a label of 66 octets.
  const SpfVerdict v = mail_from("192.0.2.10", "u@example.com", {}, std::string(22, '%'));
  EXPECT_EQ(v.result, SpfResult::fail);
  EXPECT_EQ(v.dns_lookups, 1u);
  EXPECT_EQ(zone.queries, std::vector<std::string>{"TXT example.com"});
  zone.add_txt("t10.example.com", {"v=spf1 a:mail.example...com -all"});
  EXPECT_EQ(mail_from("192.0.2.10", "u@t10.example.com").result, SpfResult::fail);
  zone.add_txt("t11.example.com", {"v=spf1 a:" + std::string(64, 'a') + ".example.com -all"});
  EXPECT_EQ(mail_from("192.0.2.10", "u@t11.example.com").result, SpfResult::fail);
}

TEST_F(SpfEval, OddCharactersAreEscapedInQueries) {
  zone.add_txt("example.com", {"v=spf1 a:foo:bar/baz.example.com a:macro%%percent%_space.example.com -all"});
  zone.add_addr("foo\\058bar\\047baz.example.com", {"192.0.2.1"});
  zone.add_addr("macro\\037percent\\032space.example.com", {"192.0.2.2"});
  EXPECT_EQ(mail_from("192.0.2.1", "u@example.com").result, SpfResult::pass);
  EXPECT_EQ(mail_from("192.0.2.2", "u@example.com").result, SpfResult::pass);
  zone.add_txt("l.example.com", {"v=spf1 exists:%{l}.x.example.com -all"});
  mail_from("192.0.2.1", "a.b\\c@l.example.com");
  EXPECT_EQ(zone.queries.back(), "ADDR a.b\\092c.x.example.com");
}

TEST_F(SpfEval, Explanation) {
  zone.add_txt("example.com", {"v=spf1 ip4:192.0.2.1 -all exp=explain.%{d}"});
  zone.add_txt("explain.example.com", {"%{i} is not one of %{d}'s designated mail servers."});
  SpfVerdict v = mail_from("192.0.2.10", "user@example.com");
  EXPECT_EQ(v.result, SpfResult::fail);
  EXPECT_EQ(v.explanation, "192.0.2.10 is not one of example.com's designated mail servers.");
  EXPECT_EQ(v.mechanism, "-all");
  EXPECT_EQ(zone.queries.back(), "TXT explain.example.com");
  // Only for fail.
  EXPECT_EQ(mail_from("192.0.2.1", "user@example.com").explanation, "");

  zone.add_txt("soft.example.com", {"v=spf1 ~all exp=explain.example.com"});
  EXPECT_EQ(mail_from("192.0.2.10", "user@soft.example.com").explanation, "");
  EXPECT_EQ(zone.queries, std::vector<std::string>{"TXT soft.example.com"});

  // c, r and t in the text; the text's trailing dot stays.
  SpfRequest request;
  request.client = ip("2001:db8::cb01");
  request.domain = "crt.example.com";
  request.sender = "user@crt.example.com";
  request.helo = kHelo;
  request.receiver = "mx.receiver.example";
  request.timestamp = 1700000000;
  zone.add_txt("crt.example.com", {"v=spf1 -all exp=msg.example.com."});
  zone.add_txt("msg.example.com", {"%{c} refused by %{r} at %{t}."});
  EXPECT_EQ(host(request).explanation, "2001:db8::cb01 refused by mx.receiver.example at 1700000000.");

  // Any problem: no explanation, the result stands.
  zone.add_txt("two.example.com", {"v=spf1 -all exp=twoexp.example.com"});
  zone.add_txt("twoexp.example.com", {"one", "two"});
  zone.add_txt("bad.example.com", {"v=spf1 -all exp=badexp.example.com"});
  zone.add_txt("badexp.example.com", {"The %{x}-files."});
  zone.add_txt("nonascii.example.com", {"v=spf1 -all exp=naexp.example.com"});
  zone.add_txt("naexp.example.com", {"\xef\xbb\xbf"
                                     "Explanation"});
  zone.add_txt("temp.example.com", {"v=spf1 -all exp=tempexp.example.com"});
  zone.fail("tempexp.example.com");
  zone.add_txt("none.example.com", {"v=spf1 -all exp=nx.example.com"});
  zone.add_txt("long.example.com", {"v=spf1 -all exp=%{H}.example.com"});
  for (const char* sender : {"u@two.example.com", "u@bad.example.com", "u@nonascii.example.com",
                             "u@temp.example.com", "u@none.example.com"}) {
    const SpfVerdict x = mail_from("192.0.2.10", sender);
    EXPECT_EQ(x.result, SpfResult::fail) << sender;
    EXPECT_EQ(x.explanation, "") << sender;
  }
  EXPECT_EQ(mail_from("192.0.2.10", "u@long.example.com", {}, std::string(30, '%')).explanation, "");
}

TEST_F(SpfEval, ExplanationComesFromTheDecidingRecord) {
  zone.add_txt("e7.example.com", {"v=spf1 include:e3.example.com -all exp=exp3.example.com"});
  zone.add_txt("e3.example.com", {"v=spf1 exp=exp1.example.com redirect=e4.example.com"});
  zone.add_txt("e4.example.com", {"v=spf1 -all exp=exp2.example.com"});
  zone.add_txt("e1.example.com", {"v=spf1 exp=exp1.example.com redirect=e2.example.com"});
  zone.add_txt("e2.example.com", {"v=spf1 -all"});
  zone.add_txt("exp1.example.com", {"No-see-um"});
  zone.add_txt("exp2.example.com", {"See me."});
  zone.add_txt("exp3.example.com", {"Correct!"});
  EXPECT_EQ(mail_from("1.2.3.4", "foo@e7.example.com").explanation, "Correct!");  // include ignores exp
  EXPECT_EQ(mail_from("1.2.3.4", "foo@e1.example.com").explanation, "");          // redirect cancels exp
  EXPECT_EQ(mail_from("1.2.3.4", "foo@e3.example.com").explanation, "See me.");   // the target's own
}

TEST_F(SpfEval, NoExceptionEscapes) {
  zone.add_txt("example.com", {"v=spf1 a:boom.example.com -all"});
  zone.throw_on("boom.example.com");
  const SpfVerdict v = mail_from("192.0.2.10", "u@example.com");
  EXPECT_EQ(v.result, SpfResult::temperror);
  EXPECT_NE(v.reason.find("internal error"), std::string::npos) << v.reason;
}

TEST(SpfResultNames, Rfc8601Spelling) {
  EXPECT_EQ(to_string(SpfResult::none), "none");
  EXPECT_EQ(to_string(SpfResult::neutral), "neutral");
  EXPECT_EQ(to_string(SpfResult::pass), "pass");
  EXPECT_EQ(to_string(SpfResult::fail), "fail");
  EXPECT_EQ(to_string(SpfResult::softfail), "softfail");
  EXPECT_EQ(to_string(SpfResult::temperror), "temperror");
  EXPECT_EQ(to_string(SpfResult::permerror), "permerror");
}

}  // namespace
}  // namespace mxgate::sender_auth
