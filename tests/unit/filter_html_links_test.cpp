// Links and forms of HTML mail (src/filter/html_links.hpp), parsed with
// libxml2's recovering HTML parser: what a reader sees, what a hostile or
// broken document does, and the documented limits.
#include "filter/html_links.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace mxgate::filter {
namespace {

using namespace std::string_view_literals;

TEST(HtmlLinks, LinksWithVisibleText) {
  const auto scan = scan_html(
      "<html><body><p>Dear customer,</p>"
      "<a href=\"https://evil.test/login\">  www.<b>bank</b>.test\n </a>"
      "<A HREF='https://a.test/?x=1&amp;y=2'>Click\t\there</A>"
      "<a name=anchor>no href</a>"
      "<map><area href=\"https://map.test/\" alt=\"Map\"></map>"
      "</body></html>");
  ASSERT_EQ(scan.links.size(), 3u);
  EXPECT_EQ(scan.links[0].href, "https://evil.test/login");
  EXPECT_EQ(scan.links[0].text, "www.bank.test");
  EXPECT_EQ(scan.links[1].href, "https://a.test/?x=1&y=2");
  EXPECT_EQ(scan.links[1].text, "Click here");
  EXPECT_EQ(scan.links[2].href, "https://map.test/");
  EXPECT_EQ(scan.links[2].text, "");
  EXPECT_FALSE(scan.truncated);
}

TEST(HtmlLinks, ScriptAndStyleAreNotVisibleText) {
  const auto scan = scan_html(
      "<a href='https://x.test/'><style>.a{}</style>Visible<script>var s='https://bank.test';</script>"
      "&nbsp;text</a><script>document.write('<a href=\"https://hidden.test\">x</a>')</script>");
  ASSERT_EQ(scan.links.size(), 1u);
  EXPECT_EQ(scan.links[0].text, "Visible text");
}

TEST(HtmlText, TheDocumentReadsAsTheReaderSeesIt) {
  const auto scan = scan_html(
      "<html><head><title>T</title><style>p{color:red}</style></head><body>"
      "<table><tr><td>cell</td><td>two</td></tr></table>"
      "<p>Dear&nbsp;customer,\n\n   click <a href='https://x.test/'>here</a>!</p>"
      "<script>var hidden = 'not shown';</script><!-- a comment --></body></html>");
  EXPECT_EQ(scan.text, "T cell two Dear customer, click here!");
}

TEST(HtmlText, TheTextIsCutAtItsLimitOnACharacterBoundary) {
  std::string text;
  while (text.size() < kMaxHtmlTextBytes + 100) text += "\xc3\xa4";  // "ä" repeated
  const auto scan = scan_html("<p>" + text + "</p>");
  EXPECT_LE(scan.text.size(), kMaxHtmlTextBytes);
  EXPECT_GE(scan.text.size(), kMaxHtmlTextBytes - 2);
  EXPECT_EQ(scan.text.size() % 2, 0u);  // whole two-byte characters only
  EXPECT_EQ(scan.text.substr(0, 4), "\xc3\xa4\xc3\xa4");
  EXPECT_FALSE(scan.truncated);  // the text limit does not cut links or forms
}

TEST(HtmlLinks, LinkTextIsCutAtTheLimitOnACharacterBoundary) {
  std::string text;
  while (text.size() < kMaxLinkTextBytes * 2) text += "\xc3\xa4x";  // "äx" repeated
  const auto scan = scan_html("<a href='https://x.test/'>" + text + "</a>");
  ASSERT_EQ(scan.links.size(), 1u);
  EXPECT_LE(scan.links[0].text.size(), kMaxLinkTextBytes);
  EXPECT_GE(scan.links[0].text.size(), kMaxLinkTextBytes - 4);
  const std::string& t = scan.links[0].text;
  EXPECT_TRUE(t.back() == 'x' || t.substr(t.size() - 2) == "\xc3\xa4");
}

TEST(HtmlForms, PasswordInputInsideAForm) {
  const auto scan = scan_html(
      "<form action='https://collect.test/p.php' method=post><input name=u>"
      "<input type=' PassWord ' name=p><input type=submit></form>"
      "<form action='/search'><input type=text name=q></form>");
  ASSERT_EQ(scan.forms.size(), 2u);
  EXPECT_EQ(scan.forms[0].action, "https://collect.test/p.php");
  EXPECT_TRUE(scan.forms[0].has_password_input);
  EXPECT_FALSE(scan.forms[1].has_password_input);
  EXPECT_TRUE(scan.has_password_form());
}

TEST(HtmlForms, FormWithoutPasswordIsNotAPasswordForm) {
  const auto scan =
      scan_html("<form action=/s><input type=text><input type=email></form><input type=hidden>");
  ASSERT_EQ(scan.forms.size(), 1u);
  EXPECT_FALSE(scan.has_password_form());
}

TEST(HtmlForms, PasswordInputWithoutAnyFormIsNotAPasswordForm) {
  const auto scan = scan_html("<p>Enter: <input type=password></p>");
  EXPECT_TRUE(scan.forms.empty());
  EXPECT_TRUE(scan.password_input_outside_form);
  EXPECT_FALSE(scan.has_password_form());
}

TEST(HtmlForms, MisnestedFormInATableStillCounts) {
  // A form closed before its inputs (a common phishing-kit shape): the
  // recovered tree may not nest the input in the form.
  const auto scan = scan_html(
      "<table><tr><td><form action='https://collect.test/'></td></tr>"
      "<tr><td><input type=password name=p></td></tr></table></form>");
  ASSERT_FALSE(scan.forms.empty());
  EXPECT_TRUE(scan.has_password_form());
}

TEST(HtmlLimits, HugeLinkCountStopsAtTheLimit) {
  std::string html = "<html><body>";
  for (std::size_t i = 0; i < kMaxHtmlLinks + 500; ++i)
    html += "<a href='https://h" + std::to_string(i) + ".test/'>l</a>";
  html += "<form><input type=password></form></body></html>";
  const auto scan = scan_html(html);
  EXPECT_EQ(scan.links.size(), kMaxHtmlLinks);
  EXPECT_TRUE(scan.truncated);
  EXPECT_EQ(scan.links.back().href, "https://h" + std::to_string(kMaxHtmlLinks - 1) + ".test/");
  EXPECT_TRUE(scan.has_password_form());  // forms after the link limit are still seen
}

TEST(HtmlLimits, ExactlyAtTheLinkLimitIsNotTruncated) {
  std::string html;
  for (int i = 0; i < 3; ++i) html += "<a href='https://h.test/'>l</a>";
  EXPECT_FALSE(scan_html(html, HtmlScanOptions{.max_links = 3}).truncated);
  EXPECT_TRUE(scan_html(html + "<a href=x>", HtmlScanOptions{.max_links = 3}).truncated);
}

TEST(HtmlLimits, FormCountStopsAtTheLimit) {
  std::string html;
  for (std::size_t i = 0; i <= kMaxHtmlForms; ++i) html += "<form action=a></form>";
  const auto scan = scan_html(html);
  EXPECT_EQ(scan.forms.size(), kMaxHtmlForms);
  EXPECT_TRUE(scan.truncated);
}

TEST(HtmlLimits, DeepNestingDoesNotHideLinks) {
  // libxml2 abandons a document nested deeper than 256 elements unless told
  // otherwise; a browser renders it.
  std::string html = "<html><body>";
  for (int i = 0; i < 1000; ++i) html += "<div>";
  html += "<a href='https://evil.test/'>www.bank.test</a><form><input type=password></form>";
  const auto scan = scan_html(html);
  ASSERT_EQ(scan.links.size(), 1u);
  EXPECT_EQ(scan.links[0].text, "www.bank.test");
  EXPECT_TRUE(scan.has_password_form());
  EXPECT_FALSE(scan.truncated);
}

TEST(HtmlGarbage, NothingCrashes) {
  std::string random;
  unsigned state = 12345;
  for (int i = 0; i < 20000; ++i) {
    state = state * 1103515245u + 12345u;
    random.push_back(static_cast<char>(state >> 16));
  }
  const std::string deep(20000, '<');
  std::string nested;
  for (int i = 0; i < 5000; ++i) nested += "<div><a href='https://n.test/'><span>";
  for (const std::string& html :
       {std::string(), std::string("<"), std::string("<a href="), std::string("<a href='x'>unclosed"),
        std::string("<form><input type=password"), std::string("\0\0<a href=\"x\0y\">t\0</a>"sv),
        std::string("<html><body><a href='https://\xff\xfe.test/'>\xff\xfe\xc3</a>"),
        std::string(
            "<!DOCTYPE html SYSTEM 'http://dtd.test/x.dtd'><!ENTITY x SYSTEM 'file:///etc/passwd'>&x;"),
        std::string("<?xml version='1.0' encoding='bogus-charset'?><a href=x>t</a>"), random, deep, nested}) {
    for (const bool utf8 : {true, false}) {
      const auto scan = scan_html(html, HtmlScanOptions{.utf8 = utf8});
      EXPECT_LE(scan.links.size(), kMaxHtmlLinks);
    }
  }
}

TEST(HtmlEncoding, AttachmentCharsetComesFromTheDocument) {
  const auto scan = scan_html(
      "<html><head><meta http-equiv='Content-Type' content='text/html; charset=iso-8859-1'></head>"
      "<body><a href='https://x.test/'>Konto \xfc"
      "berpr\xfc"
      "fen</a></body></html>",
      HtmlScanOptions{.utf8 = false});
  ASSERT_EQ(scan.links.size(), 1u);
  EXPECT_EQ(scan.links[0].text,
            "Konto \xc3\xbc"
            "berpr\xc3\xbc"
            "fen");
}

}  // namespace
}  // namespace mxgate::filter
