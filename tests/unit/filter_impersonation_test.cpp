// Impersonation rules (src/filter/impersonation.hpp): protected names from
// outside, look-alike sender domains, and Reply-To diversions; each fires on
// a crafted message and stays silent on its legitimate twin.
#include "filter/impersonation.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace mxgate::filter {
namespace {

const ContentPolicy kPolicy{.protected_domains = {"example.test"},
                            .protected_names = {"Alice Martin", "Jean-Luc Picard", "Zoë Ångström"}};

Mailbox mailbox(std::string display_name, std::string address) {
  Mailbox m;
  m.display_name = std::move(display_name);
  m.address = std::move(address);
  const auto at = m.address.rfind('@');
  if (at != std::string::npos) {
    m.domain = m.address.substr(at + 1);
    for (char& c : m.domain) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return m;
}

ParsedMessage from(std::string display_name, std::string address) {
  ParsedMessage m;
  m.from = mailbox(std::move(display_name), std::move(address));
  return m;
}

ParsedMessage with_reply_to(ParsedMessage m, std::string address, std::string display_name = {}) {
  m.reply_to.push_back(mailbox(std::move(display_name), std::move(address)));
  return m;
}

const Finding* find(const Findings& f, std::string_view rule) {
  for (const auto& finding : f.findings) {
    if (finding.rule == rule) return &finding;
  }
  return nullptr;
}

void expect_rule(const ParsedMessage& m, std::string_view rule, double score) {
  const Findings f = check_impersonation(m, kPolicy);
  const Finding* finding = find(f, rule);
  ASSERT_NE(finding, nullptr) << rule;
  EXPECT_EQ(finding->category, Category::impersonation);
  EXPECT_DOUBLE_EQ(finding->score, score);
  EXPECT_TRUE(f.failures.empty());
}

void expect_no_rule(const ParsedMessage& m, std::string_view rule) {
  const Findings f = check_impersonation(m, kPolicy);
  const Finding* finding = find(f, rule);
  EXPECT_EQ(finding, nullptr) << (finding != nullptr ? finding->detail : "");
}

void expect_clean(const ParsedMessage& m) {
  const Findings f = check_impersonation(m, kPolicy);
  for (const auto& finding : f.findings) ADD_FAILURE() << finding.rule << ": " << finding.detail;
  EXPECT_TRUE(f.failures.empty());
}

// --- PROTECTED_NAME_EXTERNAL ------------------------------------------------------

TEST(ProtectedNameExternal, ProtectedNameFromOutsideFires) {
  for (const char* name :
       {"Alice Martin", "alice martin", "  ALICE \t MARTIN ", "Martin, Alice", "Martin Alice",
        "\"Alice Martin\"", "Alice Martin CEO", "Alice Martin (Example Corp)",
        "Al\xc3\xad"
        "ce Martin",
        "\xd0\x90lice Martin" /* Cyrillic A */, "A1ice Martin", "Alice\xc2\xa0Martin",
        "Ali\xe2\x80\x8b"
        "ce Martin" /* zero-width space */,
        "Alice.Martin"}) {
    SCOPED_TRACE(name);
    expect_rule(from(name, "ceo.office@gmail.com"), "PROTECTED_NAME_EXTERNAL", 1.0);
  }
  expect_rule(from("Picard, Jean-Luc", "captain@mail.test"), "PROTECTED_NAME_EXTERNAL", 1.0);
  expect_rule(from("Zoe Angstrom", "z@mail.test"), "PROTECTED_NAME_EXTERNAL", 1.0);
  expect_rule(from("ZO\xc3\x8b \xc3\x85NGSTR\xc3\x96M", "z@mail.test"), "PROTECTED_NAME_EXTERNAL", 1.0);
}

TEST(ProtectedNameExternal, SameNameFromTheProtectedDomainIsFine) {
  expect_clean(from("Alice Martin", "alice@example.test"));
  expect_clean(from("Alice Martin", "alice@mail.example.test"));
  expect_clean(from("Alice Martin", "alice@EXAMPLE.TEST"));
  // A diverted Reply-To is REPLY_TO_MISMATCH's finding, not this rule's.
  expect_no_rule(with_reply_to(from("Alice Martin", "alice@example.test"), "alice.martin@gmail.com"),
                 "PROTECTED_NAME_EXTERNAL");
}

TEST(ProtectedNameExternal, OtherNamesAreFine) {
  for (const char* name : {"Alice Martinez", "Alice", "Martin", "Alicia Martin", "Bob Martin", "", "Alice M.",
                           "Alice Martin via DocuSign", "Jean Picard"}) {
    SCOPED_TRACE(name);
    expect_clean(from(name, "someone@mail.test"));
  }
}

TEST(ProtectedNameExternal, OneWordProtectedNameMustBeTheWholeName) {
  const ContentPolicy policy{.protected_domains = {"example.test"}, .protected_names = {"Payroll"}};
  EXPECT_NE(find(check_impersonation(from("PAYROLL", "x@mail.test"), policy), "PROTECTED_NAME_EXTERNAL"),
            nullptr);
  EXPECT_TRUE(check_impersonation(from("Payroll Services Ltd", "x@mail.test"), policy).findings.empty());
}

// --- LOOKALIKE_FROM_DOMAIN ------------------------------------------------------------

TEST(LookalikeFromDomain, FromOrReplyToImitatesAProtectedDomain) {
  expect_rule(from("Bob", "bob@exarnple.test"), "LOOKALIKE_FROM_DOMAIN", 1.0);
  expect_rule(from("", "billing@xn--exmple-cua.test"), "LOOKALIKE_FROM_DOMAIN", 1.0);
  expect_rule(with_reply_to(from("Bob", "bob@mail.test"), "bob@examp1e.test"), "LOOKALIKE_FROM_DOMAIN", 1.0);
  const Findings f = check_impersonation(from("Alice Martin", "alice@exampel.test"), kPolicy);
  EXPECT_NE(find(f, "LOOKALIKE_FROM_DOMAIN"), nullptr);
  EXPECT_NE(find(f, "PROTECTED_NAME_EXTERNAL"), nullptr);
}

TEST(LookalikeFromDomain, ProtectedAndUnrelatedDomainsAreFine) {
  expect_clean(from("Bob", "bob@example.test"));
  expect_clean(from("Bob", "bob@mail.example.test"));
  expect_clean(from("Bob", "bob@unrelated.org"));
}

// --- REPLY_TO_MISMATCH -----------------------------------------------------------------

TEST(ReplyToMismatch, OtherDomainIsWeak) {
  expect_rule(with_reply_to(from("Shop", "news@shop.test"), "support@helpdesk.test"), "REPLY_TO_MISMATCH",
              0.3);
  expect_rule(with_reply_to(from("Bob", "bob@example.test"), "bob@other.test"), "REPLY_TO_MISMATCH", 0.3);
}

TEST(ReplyToMismatch, ProtectedNameRaisesIt) {
  // A spoofed From in our own domain, answers diverted: DMARC will catch the
  // spoof; the diversion is caught here.
  expect_rule(with_reply_to(from("Alice Martin", "alice@example.test"), "alice.martin@gmail.com"),
              "REPLY_TO_MISMATCH", 1.0);
  expect_rule(with_reply_to(from("Alice Martin", "ceo.office@gmail.com"), "a.martin@mail.test"),
              "REPLY_TO_MISMATCH", 1.0);
}

TEST(ReplyToMismatch, FreeMailForAProtectedDomainRaisesIt) {
  expect_rule(with_reply_to(from("Finance", "finance@example.test"), "finance.dept@outlook.com"),
              "REPLY_TO_MISMATCH", 1.0);
  expect_rule(with_reply_to(from("", "ceo@mail.example.test"), "x@proton.me"), "REPLY_TO_MISMATCH", 1.0);
  // Free mail behind an outside sender is only the weak sign.
  expect_rule(with_reply_to(from("Shop", "news@shop.test"), "owner@gmail.com"), "REPLY_TO_MISMATCH", 0.3);
}

TEST(ReplyToMismatch, SameRegistrableDomainIsFine) {
  expect_clean(with_reply_to(from("Alice Martin", "alice@example.test"), "alice@lists.example.test"));
  expect_clean(with_reply_to(from("Shop", "news@mail.shop.test"), "support@shop.test"));
  expect_clean(with_reply_to(from("Shop", "news@shop.test"), "undisclosed-recipients:;"));
}

TEST(ReplyToMismatch, StrongestReplyToDecides) {
  ParsedMessage m = with_reply_to(from("Finance", "finance@example.test"), "a@partner.test");
  m = with_reply_to(std::move(m), "b@gmail.com");
  const Findings f = check_impersonation(m, kPolicy);
  ASSERT_NE(find(f, "REPLY_TO_MISMATCH"), nullptr);
  EXPECT_DOUBLE_EQ(find(f, "REPLY_TO_MISMATCH")->score, 1.0);
  EXPECT_NE(find(f, "REPLY_TO_MISMATCH")->detail.find("gmail.com"), std::string::npos);
  EXPECT_EQ(f.findings.size(), 1u);
}

// --- whole messages and hostile input ----------------------------------------------------

TEST(Impersonation, NoFromNoFindings) {
  ParsedMessage m;
  m.reply_to.push_back(mailbox("Alice Martin", "alice@gmail.com"));
  EXPECT_TRUE(check_impersonation(m, kPolicy).findings.empty());
}

TEST(Impersonation, EmptyPolicy) {
  const Findings f = check_impersonation(from("Alice Martin", "ceo.office@gmail.com"), ContentPolicy{});
  EXPECT_TRUE(f.findings.empty());
  EXPECT_TRUE(f.failures.empty());
}

TEST(Impersonation, HostileInputDoesNotCrash) {
  std::string long_name;
  for (int i = 0; i < 20000; ++i) long_name += "Alice ";
  for (const std::string& name :
       {std::string("\xff\xfe Alice \xc3 Martin \xed\xa0\x80"), std::string("Alice\0Martin", 12), long_name,
        std::string(10000, ','), std::string("\xcc\x81\xcc\x81\xcc\x81"),
        std::string("\xe2\x80\xae nitraM ecilA")}) {
    ParsedMessage m = from(name, "x@\xff\xfe.test");
    m = with_reply_to(std::move(m), "y@xn--zzzz-.test", name);
    (void)check_impersonation(m, kPolicy);
  }
  const ContentPolicy odd{.protected_domains = {"", "\xff"}, .protected_names = {"", "\xff\xfe", ",,,", "A"}};
  (void)check_impersonation(from("\xff\xfe", "a@b.test"), odd);
}

TEST(Impersonation, InvalidUtf8NameStillMatchesItsValidWords) {
  expect_rule(from("Alice Martin \xff", "x@mail.test"), "PROTECTED_NAME_EXTERNAL", 1.0);
}

}  // namespace
}  // namespace mxgate::filter
