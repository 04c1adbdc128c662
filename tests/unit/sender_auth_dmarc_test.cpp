// DMARC: record parsing, alignment through the Public Suffix List, policy
// discovery at the From domain and its organizational domain, and the
// Authentication-Results field (RFC 7489, RFC 8601).
#include "sender_auth/dmarc.hpp"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <map>

#include "sender_auth/authentication_results.hpp"

namespace mxgate::sender_auth {
namespace {

// TXT answers from a table; only txt() is asked by DMARC.  The real
// resolver is tested against nsd in tests/integration.
class TableResolver final : public dns::Resolver {
 public:
  std::map<std::string, dns::Answer<std::string>> txt_answers;
  std::vector<std::string> asked;

  asio::awaitable<dns::Answer<dns::MxRecord>> mx(std::string) override { co_return dns::Answer<dns::MxRecord>{}; }
  asio::awaitable<dns::Answer<asio::ip::address>> addresses(std::string) override {
    co_return dns::Answer<asio::ip::address>{};
  }
  asio::awaitable<dns::Answer<dns::TlsaRecord>> tlsa(std::uint16_t, std::string) override {
    co_return dns::Answer<dns::TlsaRecord>{};
  }
  asio::awaitable<dns::Answer<std::string>> txt(std::string name) override {
    asked.push_back(name);
    auto it = txt_answers.find(name);
    if (it != txt_answers.end()) co_return it->second;
    dns::Answer<std::string> none;
    none.status = dns::Status::nxdomain;
    co_return none;
  }

  void set(const std::string& name, std::vector<std::string> records) {
    dns::Answer<std::string> a;
    a.status = dns::Status::ok;
    a.records = std::move(records);
    txt_answers[name] = a;
  }
};

const PublicSuffixList& psl() {
  static const PublicSuffixList list = [] {
    auto loaded = PublicSuffixList::load();
    EXPECT_TRUE(loaded) << loaded.error();
    return std::move(loaded.value());
  }();
  return list;
}

DmarcVerdict run(TableResolver& resolver, std::string from, SpfResult spf, std::string spf_domain,
                 std::vector<DkimVerdict> dkim) {
  asio::io_context io;
  DmarcVerdict out;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    out = co_await check_dmarc(resolver, psl(), from, spf, spf_domain, dkim);
  }, asio::detached);
  io.run();
  return out;
}

DkimVerdict dkim_pass(std::string domain) {
  DkimVerdict v;
  v.result = DkimResult::pass;
  v.domain = std::move(domain);
  return v;
}

TEST(DmarcRecord, Parsing) {
  auto r = parse_dmarc_record("v=DMARC1; p=reject; sp=none; adkim=s; aspf=r; pct=50; rua=mailto:x@y.test");
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->policy, DmarcPolicy::reject);
  EXPECT_EQ(r->subdomain_policy, DmarcPolicy::none);
  EXPECT_TRUE(r->strict_dkim);
  EXPECT_FALSE(r->strict_spf);
  EXPECT_EQ(r->percent, 50u);
  EXPECT_TRUE(parse_dmarc_record("v=DMARC1;p=quarantine"));
  EXPECT_TRUE(parse_dmarc_record("v=DMARC1 ; p = none ;"));
  EXPECT_FALSE(parse_dmarc_record("p=reject; v=DMARC1"));  // v must come first
  EXPECT_FALSE(parse_dmarc_record("v=DMARC1; sp=reject"));  // p is required
  EXPECT_FALSE(parse_dmarc_record("v=DMARC1; p=maybe"));
  EXPECT_FALSE(parse_dmarc_record("v=spf1 -all"));
  EXPECT_FALSE(parse_dmarc_record(""));
  // An invalid pct= or sp= is ignored, not fatal (section 6.3).
  auto lax = parse_dmarc_record("v=DMARC1; p=reject; pct=200; sp=sometimes");
  ASSERT_TRUE(lax);
  EXPECT_EQ(lax->percent, 100u);
  EXPECT_FALSE(lax->subdomain_policy.has_value());
}

TEST(DmarcAlignment, RelaxedUsesTheOrganizationalDomain) {
  EXPECT_EQ(psl().organizational_domain("mail.example.co.uk"), "example.co.uk");
  EXPECT_EQ(psl().organizational_domain("a.b.example.com"), "example.com");
  EXPECT_EQ(psl().organizational_domain("Example.COM."), "example.com");
  EXPECT_TRUE(aligned("mail.example.com", "example.com", false, psl()));
  EXPECT_FALSE(aligned("mail.example.com", "example.com", true, psl()));
  EXPECT_TRUE(aligned("EXAMPLE.com", "example.com", true, psl()));
  // Two customers of one public suffix are not aligned.
  EXPECT_FALSE(aligned("alice.github.io", "mallory.github.io", false, psl()));
  EXPECT_FALSE(aligned("example.co.uk", "other.co.uk", false, psl()));
  EXPECT_FALSE(aligned("", "example.com", false, psl()));
}

TEST(DmarcCheck, AlignedDkimOrSpfPasses) {
  TableResolver dns;
  dns.set("_dmarc.example.com", {"v=DMARC1; p=reject"});
  EXPECT_EQ(run(dns, "example.com", SpfResult::fail, "bounce.other.test", {dkim_pass("mail.example.com")}).result,
            DmarcResult::pass);
  EXPECT_EQ(run(dns, "example.com", SpfResult::pass, "bounces.example.com", {}).result, DmarcResult::pass);
  // A pass for another domain does not count.
  const DmarcVerdict v = run(dns, "example.com", SpfResult::pass, "esp.test", {dkim_pass("esp.test")});
  EXPECT_EQ(v.result, DmarcResult::fail);
  EXPECT_EQ(v.policy, DmarcPolicy::reject);
}

TEST(DmarcCheck, StrictAlignmentWantsTheSameName) {
  TableResolver dns;
  dns.set("_dmarc.example.com", {"v=DMARC1; p=quarantine; adkim=s; aspf=s"});
  EXPECT_EQ(run(dns, "example.com", SpfResult::pass, "bounces.example.com", {dkim_pass("mail.example.com")}).result,
            DmarcResult::fail);
  EXPECT_EQ(run(dns, "example.com", SpfResult::pass, "example.com", {}).result, DmarcResult::pass);
}

TEST(DmarcCheck, DiscoveryFallsBackToTheOrganizationalDomainAndUsesSp) {
  TableResolver dns;
  dns.set("_dmarc.example.com", {"v=DMARC1; p=reject; sp=quarantine"});
  const DmarcVerdict v = run(dns, "news.example.com", SpfResult::none, "", {});
  EXPECT_EQ(dns.asked, (std::vector<std::string>{"_dmarc.news.example.com", "_dmarc.example.com"}));
  EXPECT_EQ(v.result, DmarcResult::fail);
  EXPECT_EQ(v.policy, DmarcPolicy::quarantine);
  // A record at the From domain itself takes p=, not sp=.
  dns.set("_dmarc.news.example.com", {"v=DMARC1; p=reject"});
  EXPECT_EQ(run(dns, "news.example.com", SpfResult::none, "", {}).policy, DmarcPolicy::reject);
}

TEST(DmarcCheck, NoRecordTwoRecordsPctAndDnsFailure) {
  TableResolver dns;
  EXPECT_EQ(run(dns, "nodmarc.test", SpfResult::fail, "nodmarc.test", {}).result, DmarcResult::none);
  dns.set("_dmarc.two.test", {"v=DMARC1; p=reject", "v=DMARC1; p=none"});
  EXPECT_EQ(run(dns, "two.test", SpfResult::fail, "two.test", {}).result, DmarcResult::none);
  dns.set("_dmarc.other.test", {"v=spf1 -all", "v=DMARC1; p=reject; pct=10"});
  const DmarcVerdict sampled = run(dns, "other.test", SpfResult::fail, "other.test", {});
  EXPECT_EQ(sampled.result, DmarcResult::fail);
  EXPECT_EQ(sampled.policy, DmarcPolicy::quarantine);  // one step milder below pct=100
  dns::Answer<std::string> servfail;
  servfail.status = dns::Status::failure;
  servfail.reason = "timed out";
  dns.txt_answers["_dmarc.broken.test"] = servfail;
  EXPECT_EQ(run(dns, "broken.test", SpfResult::pass, "broken.test", {}).result, DmarcResult::temperror);
}

TEST(AuthenticationResults, FieldHasEveryMethodAndNoInjection) {
  AuthenticationResults r;
  SpfVerdict spf;
  spf.result = SpfResult::pass;
  spf.reason = "matched ip4 (192.0.2.0/24)";
  r.spf = spf;
  r.mail_from = "bob@partner.test";
  DkimVerdict dkim = dkim_pass("partner.test");
  dkim.selector = "s1";
  dkim.b_prefix = "AbCd+/12";
  r.dkim.push_back(dkim);
  DmarcVerdict dmarc;
  dmarc.result = DmarcResult::fail;
  dmarc.policy = DmarcPolicy::reject;
  dmarc.from_domain = "partner.test";
  dmarc.reason = "no aligned pass\r\nInjected: yes";
  r.dmarc = dmarc;
  EXPECT_EQ(authentication_results_field("mx.example.test", r),
            "Authentication-Results: mx.example.test;\r\n"
            "\tspf=pass (matched ip4 192.0.2.0/24) smtp.mailfrom=bob@partner.test;\r\n"
            "\tdkim=pass header.d=partner.test header.s=s1 header.b=AbCd+/12;\r\n"
            "\tdmarc=fail (p=reject; no aligned passInjected: yes) header.from=partner.test\r\n");
  EXPECT_EQ(authentication_results_field("mx.example.test", AuthenticationResults{}),
            "Authentication-Results: mx.example.test; none\r\n");
}

TEST(AuthenticationResults, OnlyOurOwnForgedFieldsAreFound) {
  const std::string content =
      "Received: from x by mx.example.test\r\n"
      "Authentication-Results: MX.Example.TEST; spf=pass\r\n\tsmtp.mailfrom=ceo@example.test\r\n"
      "Authentication-Results: other.test; dkim=pass\r\n"
      "authentication-results:mx.example.test;dkim=pass\r\n"
      "Authentication-Results: mx.example.test.evil.test; spf=pass\r\n"
      "Subject: x\r\n"
      "\r\n"
      "Authentication-Results: mx.example.test; in the body\r\n";
  const auto ranges = our_authentication_results(content, "mx.example.test");
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(content.substr(ranges[0].first, ranges[0].second - ranges[0].first),
            "Authentication-Results: MX.Example.TEST; spf=pass\r\n\tsmtp.mailfrom=ceo@example.test\r\n");
  EXPECT_EQ(content.substr(ranges[1].first, ranges[1].second - ranges[1].first),
            "authentication-results:mx.example.test;dkim=pass\r\n");
}

}  // namespace
}  // namespace mxgate::sender_auth
