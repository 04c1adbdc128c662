// filter::parse_mime: what the checks see of a message, and every limit at
// the limit and one past it.
#include "filter/mime_parser.hpp"

#include <gtest/gtest.h>

#include <string>

#include "filter/spam_rules.hpp"

namespace mxgate::filter {
namespace {

// A multipart/mixed message with a text body and the given parts (each a
// complete part: headers, blank line, body).
std::string multipart(const std::vector<std::string>& parts, const std::string& extra_headers = "") {
  std::string m =
      "Received: from client by mx\r\n"
      "From: =?UTF-8?Q?Alice_M=C3=A4rtin?= <Alice@Example.TEST>\r\n"
      "Reply-To: Helpdesk <help@other.test>, group: a@one.test, b@two.test;\r\n"
      "To: bob@example.test\r\n"
      "Subject: =?ISO-8859-1?Q?R=E9sum=E9?=\r\n" +
      extra_headers +
      "MIME-Version: 1.0\r\n"
      "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
      "\r\n"
      "preamble\r\n"
      "--b1\r\n"
      "Content-Type: text/plain; charset=iso-8859-1\r\n"
      "Content-Transfer-Encoding: quoted-printable\r\n"
      "\r\n"
      "Caf=E9 at noon\r\n";
  for (const auto& part : parts) m += "--b1\r\n" + part;
  m += "--b1--\r\n";
  return m;
}

TEST(MimeParserTest, HeadersAreDecoded) {
  const ParsedMessage m = parse_mime(multipart({}), MimeLimits{});
  ASSERT_TRUE(m.from.has_value());
  EXPECT_EQ(m.from->display_name, "Alice M\xC3\xA4rtin");
  EXPECT_EQ(m.from->address, "Alice@Example.TEST");
  EXPECT_EQ(m.from->domain, "example.test");
  ASSERT_EQ(m.reply_to.size(), 3u);
  EXPECT_EQ(m.reply_to[0].display_name, "Helpdesk");
  EXPECT_EQ(m.reply_to[0].domain, "other.test");
  EXPECT_EQ(m.reply_to[2].address, "b@two.test");
  EXPECT_EQ(m.subject, "R\xC3\xA9sum\xC3\xA9");
  EXPECT_EQ(m.headers.front().name, "Received");
  // The CRLF before a boundary belongs to the boundary (RFC 2046 section 5.1.1).
  EXPECT_EQ(m.text, "Caf\xC3\xA9 at noon");
  EXPECT_TRUE(m.limit_exceeded.empty());
}

TEST(MimeParserTest, AttachmentsAreDecodedWhateverTheyClaim) {
  const std::string msg = multipart({
      "Content-Type: application/pdf; name=\"report.pdf\"\r\n"
      "Content-Disposition: attachment; filename*=UTF-8''r%C3%A9port.pdf\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\n"
      "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n",
      "Content-Type: text/html; charset=utf-8\r\n\r\n"
      "<a href=\"http://evil.test/\">http://bank.test/</a>\r\n",
  });
  const ParsedMessage m = parse_mime(msg, MimeLimits{});
  ASSERT_EQ(m.parts.size(), 3u);
  EXPECT_FALSE(m.parts[0].attachment);
  const Part& pdf = m.parts[1];
  EXPECT_TRUE(pdf.attachment);
  EXPECT_EQ(pdf.content_type, "application/pdf");
  EXPECT_EQ(pdf.filename, "r\xC3\xA9port.pdf");
  EXPECT_EQ(pdf.data.substr(0, 2), "MZ");
  EXPECT_EQ(pdf.depth, 1u);
  EXPECT_NE(m.html.find("evil.test"), std::string::npos);
}

TEST(MimeParserTest, AForwardedMessageIsDescendedInto) {
  const std::string inner =
      "Content-Type: message/rfc822\r\n\r\n"
      "From: x@y.test\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=b2\r\n\r\n"
      "--b2\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.bin\r\n\r\n"
      "payload\r\n--b2--\r\n";
  const ParsedMessage m = parse_mime(multipart({inner}), MimeLimits{});
  ASSERT_EQ(m.parts.size(), 2u);
  EXPECT_EQ(m.parts[1].filename, "a.bin");
  EXPECT_EQ(m.parts[1].depth, 3u);  // mixed > message/rfc822 > mixed > part
}

TEST(MimeParserTest, APlainMessageIsOneTextPart) {
  const ParsedMessage m = parse_mime("From: a@b.test\r\nSubject: hi\r\n\r\nhello\r\n", MimeLimits{});
  ASSERT_EQ(m.parts.size(), 1u);
  EXPECT_EQ(m.parts[0].content_type, "text/plain");
  EXPECT_EQ(m.text, "hello\r\n");
}

TEST(MimeParserTest, GarbageDoesNotBreakIt) {
  for (const std::string& text : {std::string(), std::string("\r\n\r\n"), std::string(5000, '\0'),
                                 std::string("Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n"),
                                 std::string("From: <<<@@@>>>\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!")}) {
    const ParsedMessage m = parse_mime(text, MimeLimits{});
    EXPECT_LE(m.parts.size(), 1u);
  }
}

// depth levels of nested multipart/mixed around one leaf.
std::string nested(unsigned depth) {
  std::string head = "From: a@b.test\r\n", tail;
  for (unsigned i = 0; i < depth; ++i) {
    head += "Content-Type: multipart/mixed; boundary=\"n" + std::to_string(i) + "\"\r\n\r\n--n" +
            std::to_string(i) + "\r\n";
    tail = "--n" + std::to_string(i) + "--\r\n" + tail;
  }
  return head + "Content-Type: text/plain\r\n\r\nleaf\r\n" + tail;
}

TEST(MimeParserTest, DepthLimitAtTheLimitAndOnePast) {
  MimeLimits limits;
  limits.max_depth = 5;
  ParsedMessage m = parse_mime(nested(5), limits);
  EXPECT_TRUE(m.limit_exceeded.empty()) << m.limit_exceeded;
  ASSERT_EQ(m.parts.size(), 1u);
  EXPECT_EQ(m.parts[0].depth, 5u);
  m = parse_mime(nested(6), limits);
  EXPECT_EQ(m.limit_exceeded, "MIME nesting deeper than 5");
  EXPECT_TRUE(m.parts.empty());
}

TEST(MimeParserTest, HostileNestingIsBounded) {
  // Far deeper than any limit and than GMime's own (1024): no stack overflow.
  const ParsedMessage m = parse_mime(nested(5000), MimeLimits{});
  EXPECT_EQ(m.limit_exceeded, "MIME nesting deeper than 20");
}

TEST(MimeParserTest, PartLimitAtTheLimitAndOnePast) {
  MimeLimits limits;
  limits.max_parts = 4;  // the text body and three more
  const std::string part = "Content-Type: application/octet-stream\r\n\r\nx\r\n";
  EXPECT_TRUE(parse_mime(multipart({part, part, part}), limits).limit_exceeded.empty());
  const ParsedMessage m = parse_mime(multipart({part, part, part, part}), limits);
  EXPECT_EQ(m.limit_exceeded, "more than 4 MIME parts");
  EXPECT_EQ(m.parts.size(), 4u);
}

TEST(MimeParserTest, DecodedSizeLimitAtTheLimitAndOnePast) {
  MimeLimits limits;
  const std::string body = "Caf\xC3\xA9 at noon";  // the text part, decoded
  const std::string part = "Content-Type: application/octet-stream\r\n\r\n" + std::string(100, 'x') + "\r\n";
  limits.max_decoded_bytes = body.size() + 100;  // the part decodes to 100 x
  ParsedMessage m = parse_mime(multipart({part}), limits);
  EXPECT_TRUE(m.limit_exceeded.empty()) << m.limit_exceeded;
  limits.max_decoded_bytes -= 1;
  m = parse_mime(multipart({part}), limits);
  EXPECT_NE(m.limit_exceeded.find("decoded parts larger than"), std::string::npos);
  ASSERT_EQ(m.parts.size(), 2u);
  EXPECT_TRUE(m.parts[1].truncated);
  EXPECT_EQ(m.parts[1].data.size(), 99u);
}

std::string gtube() { return std::string("XJS*C4JDBQADN1.NSBN3*2IDNEN*") + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"; }

TEST(SpamRulesTest, GtubeScoresAsSpamPlainOrEncoded) {
  const std::string plain = "Subject: test\r\n\r\n" + gtube() + "\r\n";
  Findings f = check_spam_rules(plain, parse_mime(plain, MimeLimits{}));
  ASSERT_EQ(f.findings.size(), 1u);
  EXPECT_EQ(f.findings[0].rule, "GTUBE");
  EXPECT_EQ(f.findings[0].score, kGtubeScore);
  // base64 of the GTUBE line: only the decoded body shows it.
  const std::string encoded =
      "Subject: test\r\nContent-Transfer-Encoding: base64\r\n\r\n"
      "WEpTKkM0SkRCUUFETjEuTlNCTjMqMklETkVOKkdUVUJFLVNUQU5EQVJELUFOVEktVUJFLVRFU1QtRU1BSUwqQy4zNFg=\r\n";
  f = check_spam_rules(encoded, parse_mime(encoded, MimeLimits{}));
  EXPECT_EQ(f.findings.size(), 1u);
  // One character off is not GTUBE.
  std::string almost = gtube();
  almost.back() = 'Y';
  const std::string other = "Subject: test\r\n\r\n" + almost + "\r\n";
  EXPECT_TRUE(check_spam_rules(other, parse_mime(other, MimeLimits{})).findings.empty());
}

}  // namespace
}  // namespace mxgate::filter
