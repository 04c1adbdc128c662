// Phishing rules (src/filter/phishing.hpp): each fires on a crafted message
// and stays silent on its legitimate twin; hostile input does not crash and
// the limits are reported as check failures.
#include "filter/phishing.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "filter/html_links.hpp"
#include "filter/url.hpp"

namespace mxgate::filter {
namespace {

const ContentPolicy kPolicy{.protected_domains = {"example.test"}, .protected_names = {"Alice Martin"}};

ParsedMessage text_message(std::string text) {
  ParsedMessage m;
  m.text = std::move(text);
  return m;
}

ParsedMessage html_message(std::string html) {
  ParsedMessage m;
  m.html = std::move(html);
  m.html_body = scan_html(m.html);  // as parse_mime does
  return m;
}

ParsedMessage link_message(std::string_view href, std::string_view text) {
  return html_message("<html><body><p>Hello</p><a href=\"" + std::string(href) + "\">" + std::string(text) +
                      "</a></body></html>");
}

const Finding* find(const Findings& f, std::string_view rule) {
  for (const auto& finding : f.findings) {
    if (finding.rule == rule) return &finding;
  }
  return nullptr;
}

double total(const Findings& f) {
  double sum = 0;
  for (const auto& finding : f.findings) sum += finding.score;
  return sum;
}

void expect_rule(const ParsedMessage& m, std::string_view rule, double score) {
  const Findings f = check_phishing(m, kPolicy);
  const Finding* finding = find(f, rule);
  ASSERT_NE(finding, nullptr) << rule;
  EXPECT_EQ(finding->category, Category::phishing);
  EXPECT_DOUBLE_EQ(finding->score, score);
  EXPECT_TRUE(f.failures.empty());
}

void expect_no_rule(const ParsedMessage& m, std::string_view rule) {
  const Findings f = check_phishing(m, kPolicy);
  const Finding* finding = find(f, rule);
  EXPECT_EQ(finding, nullptr) << (finding != nullptr ? finding->detail : "");
}

void expect_clean(const ParsedMessage& m) {
  const Findings f = check_phishing(m, kPolicy);
  for (const auto& finding : f.findings) ADD_FAILURE() << finding.rule << ": " << finding.detail;
  EXPECT_TRUE(f.failures.empty());
}

// --- LINK_TEXT_MISMATCH ---------------------------------------------------------

TEST(LinkTextMismatch, UrlTextToAnotherDomainFires) {
  expect_rule(link_message("http://examp1e-login.test/", "https://example.test"), "LINK_TEXT_MISMATCH", 1.0);
  expect_rule(link_message("https://evil.test/login", "www.bank.test"), "LINK_TEXT_MISMATCH", 1.0);
  expect_rule(link_message("https://evil.test/login", "bank.test/login"), "LINK_TEXT_MISMATCH", 1.0);
  expect_rule(link_message("https://bank.test.evil.test/", " &lt;https://bank.test/&gt; "),
              "LINK_TEXT_MISMATCH", 1.0);
  expect_rule(link_message("http://paypal.com@evil.test/", "https://paypal.com/"), "LINK_TEXT_MISMATCH", 1.0);
}

TEST(LinkTextMismatch, SameRegistrableDomainIsFine) {
  expect_clean(link_message("https://www.example.test/login", "https://example.test/login"));
  expect_clean(link_message("http://example.test/", "https://example.test/"));
  expect_clean(link_message("https://login.bank.test/a?b=c", "www.bank.test"));
  expect_clean(link_message("https://WWW.BANK.TEST/", "bank.test"));
  expect_no_rule(link_message("https://xn--bcher-kva.test/",
                              "b\xc3\xbc"
                              "cher.test"),
                 "LINK_TEXT_MISMATCH");
}

TEST(LinkTextMismatch, TextThatIsNotAUrlIsNotCompared) {
  for (const char* text : {"Click here", "report.pdf", "Invoice 2024.10", "alice@bank.test", "v1.2",
                           "Visit www.bank.test today", ""}) {
    SCOPED_TRACE(text);
    expect_clean(link_message("https://tracker.mailer.test/c/123", text));
  }
  expect_clean(link_message("mailto:alice@bank.test", "alice@bank.test"));
  expect_clean(link_message("/relative/login", "https://bank.test/"));
}

TEST(LinkTextMismatch, IpTextAndHref) {
  expect_no_rule(link_message("http://192.168.1.1/", "192.168.1.1"), "LINK_TEXT_MISMATCH");
  expect_no_rule(link_message("http://3232235777/", "192.168.1.1"), "LINK_TEXT_MISMATCH");
  expect_rule(link_message("http://10.0.0.1/", "192.168.1.1"), "LINK_TEXT_MISMATCH", 1.0);
}

// --- LOOKALIKE_URL ------------------------------------------------------------------

TEST(LookalikeUrl, TextAndHtmlUrls) {
  expect_rule(text_message("Please verify at https://exarnple.test/verify now."), "LOOKALIKE_URL", 1.0);
  expect_rule(text_message("www.examp1e.test/login"), "LOOKALIKE_URL", 1.0);
  expect_rule(link_message("https://xn--exmple-cua.test/", "Sign in"), "LOOKALIKE_URL", 1.0);
  expect_rule(html_message("<form action='https://exampel.test/post'></form>"), "LOOKALIKE_URL", 1.0);
}

TEST(LookalikeUrl, TheProtectedDomainAndOthersAreFine) {
  expect_clean(text_message("https://example.test/ https://mail.example.test/x http://unrelated.org/"));
  expect_clean(link_message("https://www.example.test/", "Sign in"));
}

TEST(LookalikeUrl, DetailNamesTheFirstUrlOnce) {
  const Findings f = check_phishing(
      text_message("https://exarnple.test/a https://examp1e.test/b https://exampel.test/c"), kPolicy);
  ASSERT_EQ(f.findings.size(), 1u);
  EXPECT_NE(f.findings[0].detail.find("https://exarnple.test/a"), std::string::npos) << f.findings[0].detail;
  EXPECT_NE(f.findings[0].detail.find("example.test"), std::string::npos);
}

// --- IP_URL ---------------------------------------------------------------------------

TEST(IpUrl, AnyNotation) {
  for (const char* url : {"http://192.168.1.1/login", "http://3232235777/", "http://0x7f.1/",
                          "http://[2001:db8::1]/", "http://0300.0250.1.1/"}) {
    SCOPED_TRACE(url);
    expect_rule(text_message(std::string("Go to ") + url), "IP_URL", 0.5);
    expect_rule(link_message(url, "Open"), "IP_URL", 0.5);
  }
  expect_clean(text_message("http://host-192-168-1-1.example.test/ and version 1.2.3.4 without a scheme"));
}

// --- PUNYCODE_URL -------------------------------------------------------------------

TEST(PunycodeUrl, InternationalizedHostFires) {
  expect_rule(text_message("https://xn--80ak6aa92e.com/"), "PUNYCODE_URL", 0.5);
  expect_rule(link_message("https://\xd0\xb0\xd1\x80\xd1\x80\xd3\x8f\xd0\xb5.com/", "apple"), "PUNYCODE_URL",
              0.5);
  expect_clean(text_message("https://apple.test/"));
}

TEST(PunycodeUrl, ProtectedInternationalizedDomainIsFine) {
  const ContentPolicy policy{.protected_domains = {"xn--bcher-kva.test"}, .protected_names = {}};
  const Findings f = check_phishing(text_message("https://shop.xn--bcher-kva.test/ https://b\xc3\xbc"
                                                 "cher.test/"),
                                    policy);
  EXPECT_TRUE(f.findings.empty()) << f.findings[0].rule;
}

// --- URL_SHORTENER --------------------------------------------------------------------

TEST(UrlShortener, KnownShortenersAreWeak) {
  expect_rule(text_message("Your parcel: https://bit.ly/3abcDEF"), "URL_SHORTENER", 0.3);
  expect_rule(link_message("https://tinyurl.com/y7x", "Track"), "URL_SHORTENER", 0.3);
  expect_rule(text_message("www.bit.ly/x"), "URL_SHORTENER", 0.3);
  expect_clean(text_message("https://orbit.ly.example.test/x https://notbit.ly/x"));
  const Findings f = check_phishing(text_message("https://bit.ly/a"), kPolicy);
  EXPECT_LT(total(f), 1.0);  // alone it does not act
}

// --- HTML_PASSWORD_FORM and BODY_PASSWORD_FORM -------------------------------------------

constexpr std::string_view kLoginPage =
    "<html><body><h1>Office 365</h1><form method=post action='https://collect.test/p.php'>"
    "<input type=email name=u><input type=password name=p><button>Sign in</button></form></body></html>";

Part attachment(std::string filename, std::string content_type, std::string data) {
  Part p;
  p.filename = std::move(filename);
  p.content_type = std::move(content_type);
  p.data = std::move(data);
  p.attachment = true;
  p.depth = 1;
  return p;
}

TEST(HtmlPasswordForm, CredentialPageAttachmentFires) {
  ParsedMessage m = text_message("Please see the attached remittance.");
  m.parts.push_back(attachment("Remittance_Advice.HTM", "application/octet-stream", std::string(kLoginPage)));
  expect_rule(m, "HTML_PASSWORD_FORM", 1.0);

  ParsedMessage by_type = text_message("x");
  by_type.parts.push_back(attachment("", "text/html", std::string(kLoginPage)));
  expect_rule(by_type, "HTML_PASSWORD_FORM", 1.0);

  ParsedMessage sniffed = text_message("x");
  sniffed.parts.push_back(attachment("scan.pdf", "application/pdf", "\n\n  " + std::string(kLoginPage)));
  expect_rule(sniffed, "HTML_PASSWORD_FORM", 1.0);
}

TEST(HtmlPasswordForm, HtmlAttachmentWithoutPasswordIsFine) {
  ParsedMessage m = text_message("The newsletter is attached.");
  m.parts.push_back(
      attachment("newsletter.html", "text/html",
                 "<html><form action='https://www.example.test/search'><input name=q></form></html>"));
  m.parts.push_back(attachment("report.pdf", "application/pdf", "%PDF-1.7 binary <input type=password>"));
  expect_clean(m);
}

TEST(HtmlPasswordForm, InlineHtmlPartIsTheBodyNotAnAttachment) {
  ParsedMessage m = html_message(std::string(kLoginPage));
  Part inline_html;
  inline_html.content_type = "text/html";
  inline_html.data = std::string(kLoginPage);
  m.parts.push_back(inline_html);
  const Findings f = check_phishing(m, kPolicy);
  EXPECT_EQ(find(f, "HTML_PASSWORD_FORM"), nullptr);
  ASSERT_NE(find(f, "BODY_PASSWORD_FORM"), nullptr);
  EXPECT_DOUBLE_EQ(find(f, "BODY_PASSWORD_FORM")->score, 0.7);
  EXPECT_LT(total(f), 1.0);
}

TEST(HtmlPasswordForm, BodyFormWithAnotherSignActs) {
  const Findings f = check_phishing(
      html_message("<form action='http://203.0.113.9/login.php'><input type=password></form>"), kPolicy);
  EXPECT_NE(find(f, "BODY_PASSWORD_FORM"), nullptr);
  EXPECT_NE(find(f, "IP_URL"), nullptr);
  EXPECT_GE(total(f), 1.0);
}

TEST(HtmlPasswordForm, LinksInsideAttachmentsAreChecked) {
  ParsedMessage m = text_message("x");
  m.parts.push_back(attachment("a.html", "text/html", "<a href='https://exarnple.test/'>Open</a>"));
  expect_rule(m, "LOOKALIKE_URL", 1.0);
}

// --- the whole message ----------------------------------------------------------------

TEST(Phishing, LegitimateNewsletterIsClean) {
  ParsedMessage m = text_message(
      "Hello Bob,\nour new catalogue is at https://www.example.test/catalogue (or www.example.test).\n"
      "Unsubscribe: https://example.test/unsubscribe?id=42.\n");
  m.html =
      "<html><body><p>Hello Bob,</p><a "
      "href='https://www.example.test/catalogue'>https://example.test/catalogue</a>"
      "<a href='https://tracker.example.test/c/1'>Read more</a><img src='https://cdn.test/logo.png'>"
      "<form action='https://www.example.test/search'><input type=search name=q></form></body></html>";
  m.html_body = scan_html(m.html);
  expect_clean(m);
}

TEST(Phishing, EmptyMessageAndPolicy) {
  expect_clean(ParsedMessage{});
  const Findings f = check_phishing(text_message("https://exarnple.test/"), ContentPolicy{});
  EXPECT_TRUE(f.findings.empty());
  EXPECT_TRUE(f.failures.empty());
}

TEST(Phishing, EveryRuleOnceAndInTheRightCategory) {
  ParsedMessage m = text_message("http://1.2.3.4/ http://5.6.7.8/ https://bit.ly/a https://goo.gl/b");
  m.html = "<a href='https://evil.test/'>www.bank.test</a><a href='https://evil2.test/'>www.bank2.test</a>";
  m.html_body = scan_html(m.html);
  const Findings f = check_phishing(m, kPolicy);
  std::vector<std::string> rules;
  for (const auto& finding : f.findings) {
    EXPECT_EQ(finding.category, Category::phishing);
    rules.push_back(finding.rule);
  }
  std::sort(rules.begin(), rules.end());
  EXPECT_EQ(rules, (std::vector<std::string>{"IP_URL", "LINK_TEXT_MISMATCH", "URL_SHORTENER"}));
  EXPECT_NE(find(f, "IP_URL")->detail.find("1.2.3.4"), std::string::npos);
  EXPECT_NE(find(f, "LINK_TEXT_MISMATCH")->detail.find("bank.test"), std::string::npos);
}

TEST(Phishing, DetailIsSafeForALogLine) {
  const Findings f = check_phishing(link_message("http://1.2.3.4/\r\nX-Injected: \xff", "x"), kPolicy);
  ASSERT_NE(find(f, "IP_URL"), nullptr);
  const std::string& detail = find(f, "IP_URL")->detail;
  EXPECT_EQ(detail.find('\n'), std::string::npos);
  EXPECT_EQ(detail.find('\xff'), std::string::npos);
}

// --- limits and hostile input ------------------------------------------------------------

TEST(PhishingLimits, TooManyTextUrlsIsACheckFailure) {
  std::string text;
  for (std::size_t i = 0; i <= kMaxTextUrls; ++i) text += "https://ok.test/" + std::to_string(i) + " ";
  const Findings f = check_phishing(text_message(text), kPolicy);
  EXPECT_TRUE(f.findings.empty());
  ASSERT_EQ(f.failures.size(), 1u);
  EXPECT_EQ(f.failures[0].check, "phishing");
}

TEST(PhishingLimits, TooManyHtmlLinksIsACheckFailureButTheFirstAreChecked) {
  std::string html = "<a href='http://10.1.1.1/'>x</a>";
  for (std::size_t i = 0; i < kMaxHtmlLinks + 10; ++i) html += "<a href='https://ok.test/'>link</a>";
  const Findings f = check_phishing(html_message(html), kPolicy);
  EXPECT_NE(find(f, "IP_URL"), nullptr);
  ASSERT_EQ(f.failures.size(), 1u);
  EXPECT_EQ(f.failures[0].check, "phishing");
}

TEST(PhishingLimits, HostileInputDoesNotCrash) {
  std::string random;
  unsigned state = 99;
  for (int i = 0; i < 50000; ++i) {
    state = state * 1103515245u + 12345u;
    random.push_back(static_cast<char>(state >> 16));
  }
  ParsedMessage m = text_message(random + " http://\xff\xfe/ https://xn--zzzz-.test/ www.\xc3 http://[::1");
  m.html = random +
           "<a href='http://xn--.xn--/'>https://\xff</a><a href='\xff'>www.</a><form><input type=password>";
  m.html_body = scan_html(m.html);
  m.parts.push_back(attachment("x.html", "text/html", random));
  m.parts.push_back(attachment("y.htm", "text/html", ""));
  m.parts.push_back(attachment("z", "", "<form" + random));
  (void)check_phishing(m, kPolicy);
  const ContentPolicy odd{.protected_domains = {"", "xn--zzzz-", "\xff\xfe", "1.2.3.4"},
                          .protected_names = {}};
  (void)check_phishing(m, odd);
}

}  // namespace
}  // namespace mxgate::filter
