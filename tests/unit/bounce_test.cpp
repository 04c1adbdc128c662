// Bounces (RFC 3464 DSNs in an RFC 6522 multipart/report): parsed back
// structurally - header fields, boundary, the three parts, the DSN fields -
// and checked for the line invariants (CRLF only, <= 998 octets) and header
// injection, in the ASCII and the RFC 6533 (UTF-8) forms.
#include "delivery/bounce.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "queue/spool.hpp"

namespace mxgate::delivery {
namespace {

using std::chrono::system_clock;

constexpr std::int64_t kNow = 1739440800;  // Thu, 13 Feb 2025 10:00:00 +0000

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// A header section: unfolded fields in order.  Field names lower-cased.
using Fields = std::vector<std::pair<std::string, std::string>>;

Fields parse_fields(std::string_view block) {
  Fields fields;
  while (!block.empty()) {
    auto end = block.find("\r\n");
    std::string_view line = block.substr(0, end);
    block.remove_prefix(end == std::string_view::npos ? block.size() : end + 2);
    if (line.empty()) continue;
    if ((line.front() == ' ' || line.front() == '\t') && !fields.empty()) {
      fields.back().second.append(line);  // unfold: CRLF removed, WSP kept
      continue;
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) {
      ADD_FAILURE() << "not a header field: " << line;
      continue;
    }
    std::string value(line.substr(colon + 1));
    value.erase(0, value.find_first_not_of(' '));
    fields.emplace_back(lower(std::string(line.substr(0, colon))), value);
  }
  return fields;
}

std::optional<std::string> field(const Fields& fields, std::string_view name) {
  for (const auto& [n, v] : fields) {
    if (n == name) return v;
  }
  return std::nullopt;
}

std::size_t count(const Fields& fields, std::string_view name) {
  return static_cast<std::size_t>(
      std::count_if(fields.begin(), fields.end(), [&](const auto& f) { return f.first == name; }));
}

struct Part {
  Fields headers;
  std::string body;
};

struct Parsed {
  Fields headers;
  std::string boundary;
  std::vector<Part> parts;
};

std::pair<std::string_view, std::string_view> split_head(std::string_view message) {
  const auto blank = message.find("\r\n\r\n");
  if (blank == std::string_view::npos) return {message, {}};
  return {message.substr(0, blank + 2), message.substr(blank + 4)};
}

std::string parameter(const std::string& value, const std::string& name) {
  const auto at = lower(value).find(name + "=");
  if (at == std::string::npos) return {};
  std::string rest = value.substr(at + name.size() + 1);
  if (!rest.empty() && rest.front() == '"') return rest.substr(1, rest.find('"', 1) - 1);
  return rest.substr(0, rest.find_first_of("; \t"));
}

Parsed parse(const std::string& message) {
  Parsed p;
  auto [head, body] = split_head(message);
  p.headers = parse_fields(head);
  p.boundary = parameter(field(p.headers, "content-type").value_or(""), "boundary");
  EXPECT_FALSE(p.boundary.empty());
  const std::string delimiter = "\r\n--" + p.boundary;
  // The preamble ends at the first delimiter; the body before it is "\r\n"-prefixed here.
  std::string rest = "\r\n" + std::string(body);
  auto at = rest.find(delimiter);
  EXPECT_NE(at, std::string::npos);
  while (at != std::string::npos) {
    std::size_t start = at + delimiter.size();
    if (rest.compare(start, 2, "--") == 0) {
      EXPECT_EQ(rest.substr(start), "--\r\n") << "epilogue after the close delimiter";
      break;
    }
    EXPECT_EQ(rest.compare(start, 2, "\r\n"), 0);
    start += 2;
    const auto next = rest.find(delimiter, start);
    EXPECT_NE(next, std::string::npos) << "no close delimiter";
    const std::string_view part = std::string_view(rest).substr(start, next - start);
    auto [part_head, part_body] = split_head(part);
    p.parts.push_back({parse_fields(part_head), std::string(part_body)});
    at = next;
  }
  return p;
}

// The DSN body: groups of fields separated by blank lines.
std::vector<Fields> dsn_groups(std::string_view body) {
  std::vector<Fields> groups;
  while (!body.empty()) {
    auto end = body.find("\r\n\r\n");
    std::string_view group = body.substr(0, end == std::string_view::npos ? body.size() : end + 2);
    body.remove_prefix(end == std::string_view::npos ? body.size() : end + 4);
    if (!group.empty()) groups.push_back(parse_fields(group));
  }
  return groups;
}

// CRLF line ends, no bare CR or LF, no line over 998 octets.
void expect_line_invariants(const std::string& message) {
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < message.size(); ++i) {
    if (message[i] == '\r') {
      ASSERT_TRUE(i + 1 < message.size() && message[i + 1] == '\n') << "bare CR at " << i;
      EXPECT_LE(i - line_start, 998u) << "line at " << line_start;
      ++i;
      line_start = i + 1;
    } else {
      ASSERT_NE(message[i], '\n') << "bare LF at " << i;
    }
  }
  EXPECT_EQ(line_start, message.size()) << "message does not end in CRLF";
}

std::vector<std::string> lines(const std::string& message) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (auto end = message.find("\r\n"); end != std::string::npos; end = message.find("\r\n", start)) {
    out.push_back(message.substr(start, end - start));
    start = end + 2;
  }
  return out;
}

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

queue::Envelope original() {
  queue::Envelope e;
  e.id = "0K5R3ABCDEFGHIJK";
  e.sender = "alice@example.org";
  e.recipients = {"bob@example.com", "carol@example.net", "dave@example.com"};
  e.received_unix = kNow - 3600;
  e.client_address = "192.0.2.1";
  e.helo = "client.example.org";
  return e;
}

const std::string kContent =
    "Received: from client.example.org ([192.0.2.1])\r\n\tby mx.example.com with ESMTP id "
    "0K5R3ABCDEFGHIJK\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: bob@example.com, carol@example.net\r\n"
    "Subject: quarterly numbers\r\n"
    "Message-ID: <original@example.org>\r\n"
    "\r\n"
    "The secret body must not come back.\r\n";

system_clock::time_point at(std::int64_t unix_seconds) {
  return system_clock::time_point(std::chrono::seconds(unix_seconds));
}

std::vector<FailedRecipient> two_failures() {
  return {{"bob@example.com", "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
           "mx.example.com"},
          {"carol@example.net", "4.4.1 connection refused by mx.example.net:25", ""}};
}

TEST(Bounce, NeverToTheNullSender) {
  queue::Envelope e = original();
  EXPECT_TRUE(should_bounce(e));
  e.sender.clear();
  EXPECT_FALSE(should_bounce(e));
}

TEST(Bounce, TopLevelHeaderFields) {
  const Bounce b = make_bounce(original(), kContent, two_failures(), "mx.example.com", at(kNow));
  const Parsed p = parse(b.content);
  EXPECT_EQ(field(p.headers, "from"), "MAILER-DAEMON@mx.example.com (Mail Delivery System)");
  EXPECT_EQ(field(p.headers, "to"), "<alice@example.org>");
  EXPECT_EQ(field(p.headers, "subject"), "Undelivered Mail Returned to Sender");
  EXPECT_EQ(field(p.headers, "date"), "Thu, 13 Feb 2025 10:00:00 +0000");
  EXPECT_EQ(field(p.headers, "auto-submitted"), "auto-replied");
  EXPECT_EQ(field(p.headers, "mime-version"), "1.0");
  const std::string message_id = field(p.headers, "message-id").value_or("");
  EXPECT_EQ(message_id.front(), '<');
  EXPECT_NE(message_id.find("@mx.example.com>"), std::string::npos) << message_id;
  const std::string type = field(p.headers, "content-type").value_or("");
  EXPECT_EQ(lower(type.substr(0, type.find(';'))), "multipart/report");
  EXPECT_EQ(parameter(type, "report-type"), "delivery-status");
  for (const char* name :
       {"from", "to", "subject", "date", "message-id", "auto-submitted", "mime-version", "content-type"}) {
    EXPECT_EQ(count(p.headers, name), 1u) << name;
  }
  EXPECT_FALSE(field(p.headers, "content-transfer-encoding")) << "7-bit report";
  EXPECT_FALSE(b.smtputf8);
  EXPECT_FALSE(b.eight_bit);
  EXPECT_TRUE(is_ascii(b.content));
}

TEST(Bounce, MessageIdsAreFresh) {
  const Bounce a = make_bounce(original(), kContent, two_failures(), "mx.example.com", at(kNow));
  const Bounce b = make_bounce(original(), kContent, two_failures(), "mx.example.com", at(kNow));
  EXPECT_NE(field(parse(a.content).headers, "message-id"), field(parse(b.content).headers, "message-id"));
}

TEST(Bounce, ThreePartsInTheOrderOfRfc6522) {
  const Bounce b = make_bounce(original(), kContent, two_failures(), "mx.example.com", at(kNow));
  const Parsed p = parse(b.content);
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(field(p.parts[0].headers, "content-type"), "text/plain; charset=us-ascii");
  EXPECT_EQ(field(p.parts[1].headers, "content-type"), "message/delivery-status");
  EXPECT_EQ(field(p.parts[2].headers, "content-type"), "text/rfc822-headers");
  for (const auto& part : p.parts) EXPECT_EQ(part.body.find(p.boundary), std::string::npos);
}

TEST(Bounce, HumanReadablePartNamesEveryFailure) {
  const Bounce b = make_bounce(original(), kContent, two_failures(), "mx.example.com", at(kNow));
  const std::string text = parse(b.content).parts.at(0).body;
  EXPECT_NE(text.find("mx.example.com"), std::string::npos);
  EXPECT_NE(text.find("<bob@example.com>: 550 5.1.1"), std::string::npos) << text;
  EXPECT_NE(text.find("<carol@example.net>: 4.4.1 connection refused"), std::string::npos) << text;
}

TEST(Bounce, DeliveryStatusFields) {
  const Bounce b = make_bounce(original(), kContent, two_failures(), "mx.example.com", at(kNow));
  const auto groups = dsn_groups(parse(b.content).parts.at(1).body);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(field(groups[0], "reporting-mta"), "dns; mx.example.com");
  EXPECT_EQ(field(groups[0], "arrival-date"), "Thu, 13 Feb 2025 09:00:00 +0000");
  EXPECT_EQ(field(groups[0], "x-mxgate-queue-id"), "0K5R3ABCDEFGHIJK");

  EXPECT_EQ(field(groups[1], "final-recipient"), "rfc822; bob@example.com");
  EXPECT_EQ(field(groups[1], "action"), "failed");
  EXPECT_EQ(field(groups[1], "status"), "5.1.1");
  EXPECT_EQ(field(groups[1], "remote-mta"), "dns; mx.example.com");
  EXPECT_EQ(field(groups[1], "diagnostic-code"),
            "smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown");

  EXPECT_EQ(field(groups[2], "final-recipient"), "rfc822; carol@example.net");
  EXPECT_EQ(field(groups[2], "action"), "failed");
  EXPECT_EQ(field(groups[2], "status"), "5.0.0") << "a 4.x.y local reason is not a permanent code";
  EXPECT_FALSE(field(groups[2], "remote-mta")) << "no remote MTA answered";
  EXPECT_EQ(field(groups[2], "diagnostic-code"), "X-mxgate; 4.4.1 connection refused by mx.example.net:25");
}

TEST(Bounce, ReturnsTheHeadersButNotTheBody) {
  const Bounce b = make_bounce(original(), kContent, two_failures(), "mx.example.com", at(kNow));
  const std::string headers = parse(b.content).parts.at(2).body;
  EXPECT_EQ(headers, kContent.substr(0, kContent.find("\r\n\r\n") + 2));
  EXPECT_EQ(b.content.find("secret body"), std::string::npos);
}

TEST(Bounce, MessageWithoutBodyReturnsAllItsHeaders) {
  const std::string content = "Subject: x\r\nFrom: a@example.org\r\n";
  const Bounce b = make_bounce(original(), content, two_failures(), "mx.example.com", at(kNow));
  EXPECT_EQ(parse(b.content).parts.at(2).body, content);
}

TEST(Bounce, StatusComesFromAPermanentEnhancedCode) {
  EXPECT_EQ(failure_status("550 5.1.1 No such user"), "5.1.1");
  EXPECT_EQ(failure_status("552-5.2.2 Mailbox full\r\n552 5.2.2 really"), "5.2.2");
  EXPECT_EQ(failure_status("554 5.7.1"), "5.7.1");
  EXPECT_EQ(failure_status("550 5.123.456 Long subject and detail"), "5.123.456");
  EXPECT_EQ(failure_status("5.4.7 message expired after 5 days; last error: 451 4.3.0 later"), "5.4.7");
  EXPECT_EQ(failure_status("550 No such user"), "5.0.0");
  EXPECT_EQ(failure_status("451 4.3.0 Try later"), "5.0.0");
  EXPECT_EQ(failure_status("4.4.1 connection refused"), "5.0.0");
  EXPECT_EQ(failure_status("550 5.1234.1 too many digits"), "5.0.0");
  EXPECT_EQ(failure_status("550 5.1.1x glued"), "5.0.0");
  EXPECT_EQ(failure_status("550 5.1"), "5.0.0");
  EXPECT_EQ(failure_status(""), "5.0.0");
  EXPECT_EQ(failure_status("550"), "5.0.0");
}

TEST(Bounce, Rfc5322Dates) {
  EXPECT_EQ(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
  EXPECT_EQ(rfc5322_date(kNow), "Thu, 13 Feb 2025 10:00:00 +0000");
  EXPECT_EQ(rfc5322_date(951782400), "Tue, 29 Feb 2000 00:00:00 +0000");
}

TEST(Bounce, LineInvariantsHoldForOrdinaryBounces) {
  expect_line_invariants(
      make_bounce(original(), kContent, two_failures(), "mx.example.com", at(kNow)).content);
}

TEST(Bounce, LongDiagnosticsAreFoldedAndCut) {
  std::string words;
  while (words.size() < 5000) words += "word ";
  const std::string unbroken(5000, 'x');
  const std::vector<FailedRecipient> failed = {
      {"bob@example.com", "550 5.1.1 " + words, "mx.example.com"},
      {"carol@example.net", "550 5.7.1 " + unbroken, std::string(2000, 'm')},
  };
  const Bounce b = make_bounce(original(), kContent, failed, "mx.example.com", at(kNow));
  expect_line_invariants(b.content);
  const auto groups = dsn_groups(parse(b.content).parts.at(1).body);
  ASSERT_EQ(groups.size(), 3u);
  const std::string folded = field(groups[1], "diagnostic-code").value_or("");
  EXPECT_EQ(folded.substr(0, 26), "smtp; 550 5.1.1 word word ");
  EXPECT_LE(folded.size(), kMaxDiagnosticBytes + 6 + 64);
  EXPECT_EQ(folded.substr(folded.size() - 3), "...");
  EXPECT_EQ(field(groups[1], "status"), "5.1.1");
  EXPECT_EQ(field(groups[2], "status"), "5.7.1");
  // Folding at spaces keeps lines short where it can.
  for (const auto& line : lines(parse(b.content).parts.at(1).body)) {
    if (line.find("word") != std::string::npos) {
      EXPECT_LE(line.size(), 78u) << line;
    }
  }
}

TEST(Bounce, LongAndManyOriginalHeadersAreLimited) {
  std::string content = "Subject: " + std::string(3000, 's') + "\r\n";  // one line over 998
  for (int i = 0; i < 5000; ++i)
    content += "X-Filler-" + std::to_string(i) + ": some value\r\n \tfolded on\r\n";
  content += "X-Last: never returned\r\n\r\nbody\r\n";
  const Bounce b = make_bounce(original(), content, two_failures(), "mx.example.com", at(kNow));
  expect_line_invariants(b.content);
  const std::string headers = parse(b.content).parts.at(2).body;
  EXPECT_LE(headers.size(), kMaxReturnedHeaderBytes);
  EXPECT_GT(headers.size(), kMaxReturnedHeaderBytes - 100);
  EXPECT_EQ(headers.find("X-Last"), std::string::npos);
  // Whole fields only: the returned section ends with a complete folded field.
  EXPECT_EQ(headers.substr(headers.size() - 13), " \tfolded on\r\n");
  EXPECT_EQ(headers.substr(0, 9 + 989), "Subject: " + std::string(989, 's'));
}

TEST(Bounce, InsertedValuesCannotInjectHeaderFieldsOrParts) {
  queue::Envelope e = original();
  e.sender = "alice@example.org>\r\nBcc: victim@example.com\r\nX-A: <";
  e.id = "0K5R3\r\nBcc: victim@example.com";
  const std::vector<FailedRecipient> failed = {
      {"bob@example.com\r\nBcc: victim@example.com", "550 5.1.1 no\r\nBcc: victim@example.com\r\n\r\n--x",
       "mx.example.com\r\nBcc: victim@example.com"},
      {"carol@example.net\nBcc: victim@example.com", "550 5.1.1 no\rBcc: victim@example.com\x1b[31m", "\x7f"},
  };
  const Bounce b = make_bounce(e, kContent, failed, "mx.example.com\r\nBcc: victim@example.com", at(kNow));
  expect_line_invariants(b.content);
  for (const auto& line : lines(b.content)) {
    EXPECT_NE(lower(line).rfind("bcc:", 0), 0u) << line;
    EXPECT_EQ(line.find('\x1b'), std::string::npos);
    EXPECT_EQ(line.find('\x7f'), std::string::npos);
  }
  const Parsed p = parse(b.content);
  EXPECT_EQ(count(p.headers, "to"), 1u);
  EXPECT_EQ(count(p.headers, "from"), 1u);
  EXPECT_FALSE(field(p.headers, "bcc"));
  EXPECT_EQ(p.parts.size(), 3u);
  const auto groups = dsn_groups(p.parts.at(1).body);
  EXPECT_EQ(groups.size(), 3u);
  for (const auto& g : groups) EXPECT_FALSE(field(g, "bcc"));
  EXPECT_EQ(field(p.headers, "from"),
            "MAILER-DAEMON@mx.example.comBccvictimexample.com (Mail Delivery System)");
}

TEST(Bounce, StrayEightBitInAnAsciiReportBecomesQuestionMarks) {
  // Not SMTPUTF8, ASCII addresses: a Latin-1 reply and a raw 8-bit header stay out.
  std::string content = "Subject: caf\xe9\r\n\r\nbody\r\n";
  const std::vector<FailedRecipient> failed = {{"bob@example.com", "550 5.1.1 unbekannt \xfc", ""}};
  const Bounce b = make_bounce(original(), content, failed, "mx.example.com", at(kNow));
  EXPECT_TRUE(is_ascii(b.content));
  EXPECT_FALSE(b.eight_bit);
  const Parsed p = parse(b.content);
  EXPECT_EQ(parameter(field(p.headers, "content-type").value_or(""), "report-type"), "delivery-status");
  EXPECT_EQ(p.parts.at(2).body, "Subject: caf?\r\n");
  EXPECT_EQ(field(dsn_groups(p.parts.at(1).body).at(1), "diagnostic-code"), "smtp; 550 5.1.1 unbekannt ?");
}

TEST(Bounce, Utf8RecipientUsesTheGlobalTypes) {
  queue::Envelope e = original();
  e.smtputf8 = true;
  e.recipients = {"用户@例子.测试"};
  const std::vector<FailedRecipient> failed = {{"用户@例子.测试", "550 5.1.1 用户不存在", "mx.例子.测试"}};
  const Bounce b = make_bounce(e, kContent, failed, "mx.example.com", at(kNow));
  expect_line_invariants(b.content);
  EXPECT_TRUE(b.eight_bit);
  EXPECT_FALSE(b.smtputf8) << "the bounce goes to an ASCII sender";
  const Parsed p = parse(b.content);
  EXPECT_EQ(parameter(field(p.headers, "content-type").value_or(""), "report-type"),
            "global-delivery-status");
  EXPECT_EQ(field(p.headers, "content-transfer-encoding"), "8bit");
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(field(p.parts[0].headers, "content-type"), "text/plain; charset=utf-8");
  EXPECT_EQ(field(p.parts[1].headers, "content-type"), "message/global-delivery-status");
  EXPECT_EQ(field(p.parts[2].headers, "content-type"), "message/global-headers");
  for (const auto& part : p.parts) EXPECT_EQ(field(part.headers, "content-transfer-encoding"), "8bit");
  const auto groups = dsn_groups(p.parts[1].body);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(field(groups[1], "final-recipient"), "utf-8; 用户@例子.测试");
  EXPECT_EQ(field(groups[1], "diagnostic-code"), "smtp; 550 5.1.1 用户不存在");
  EXPECT_EQ(field(groups[1], "remote-mta"), "dns; mx.例子.测试");
  EXPECT_EQ(field(groups[1], "status"), "5.1.1");
}

TEST(Bounce, Utf8SenderNeedsSmtputf8) {
  queue::Envelope e = original();
  e.smtputf8 = true;
  e.sender = "jürgen@bücher.example";
  const Bounce b = make_bounce(e, kContent, two_failures(), "mx.example.com", at(kNow));
  EXPECT_TRUE(b.smtputf8);
  EXPECT_TRUE(b.eight_bit);
  const Parsed p = parse(b.content);
  EXPECT_EQ(field(p.headers, "to"), "<jürgen@bücher.example>");
  EXPECT_EQ(field(dsn_groups(p.parts.at(1).body).at(1), "final-recipient"), "rfc822; bob@example.com");
  const queue::Envelope env = bounce_envelope(e, b, "0BOUNCE", "mx.example.com", kNow);
  EXPECT_TRUE(env.smtputf8);
  EXPECT_TRUE(env.body_8bitmime);
  EXPECT_EQ(env.recipients, std::vector<std::string>{"jürgen@bücher.example"});
}

TEST(Bounce, Smtputf8OriginalWithUtf8HeadersReturnsThemAsGlobalHeaders) {
  queue::Envelope e = original();
  e.smtputf8 = true;
  const std::string content = "Subject: Grüße\r\nFrom: alice@example.org\r\n\r\nbody\r\n";
  const Bounce b = make_bounce(e, content, two_failures(), "mx.example.com", at(kNow));
  const Parsed p = parse(b.content);
  EXPECT_EQ(field(p.parts.at(2).headers, "content-type"), "message/global-headers");
  EXPECT_EQ(p.parts.at(2).body, "Subject: Grüße\r\nFrom: alice@example.org\r\n");
  EXPECT_FALSE(b.smtputf8);
}

TEST(Bounce, Smtputf8OriginalThatIsAllAsciiKeepsTheAsciiTypes) {
  queue::Envelope e = original();
  e.smtputf8 = true;
  const Bounce b = make_bounce(e, kContent, two_failures(), "mx.example.com", at(kNow));
  EXPECT_TRUE(is_ascii(b.content));
  EXPECT_EQ(parameter(field(parse(b.content).headers, "content-type").value_or(""), "report-type"),
            "delivery-status");
}

TEST(Bounce, MalformedUtf8InAGlobalReportIsRepaired) {
  queue::Envelope e = original();
  e.smtputf8 = true;
  const std::vector<FailedRecipient> failed = {
      {"用户@例子.测试", "550 5.1.1 bad \xff\xc3 and overlong \xc0\xaf", ""}};
  const Bounce b =
      make_bounce(e, "Subject: \xed\xa0\x80 surrogate\r\n\r\n", failed, "mx.example.com", at(kNow));
  const Parsed p = parse(b.content);
  EXPECT_EQ(field(dsn_groups(p.parts.at(1).body).at(1), "diagnostic-code"),
            "smtp; 550 5.1.1 bad ?? and overlong ??");
  EXPECT_EQ(p.parts.at(2).body, "Subject: ??? surrogate\r\n");
}

TEST(Bounce, BoundaryNeverOccursInsideTheParts) {
  // Headers quoting a previous bounce's boundary prefix, many times over.
  std::string content;
  for (int i = 0; i < 50; ++i) content += "X-Quote: --=_mxgate_" + std::to_string(i) + "\r\n";
  content += "\r\n";
  const Bounce b = make_bounce(original(), content, two_failures(), "mx.example.com", at(kNow));
  const Parsed p = parse(b.content);
  ASSERT_EQ(p.parts.size(), 3u);
  for (const auto& part : p.parts) EXPECT_EQ(part.body.find(p.boundary), std::string::npos);
}

TEST(Bounce, EnvelopeForTheBounceHasTheNullSender) {
  const Bounce b = make_bounce(original(), kContent, two_failures(), "mx.example.com", at(kNow));
  const queue::Envelope env = bounce_envelope(original(), b, "0BOUNCE", "mx.example.com", kNow);
  EXPECT_EQ(env.id, "0BOUNCE");
  EXPECT_EQ(env.sender, "");
  EXPECT_FALSE(should_bounce(env)) << "a bounce of a bounce is never sent";
  EXPECT_EQ(env.recipients, std::vector<std::string>{"alice@example.org"});
  EXPECT_FALSE(env.smtputf8);
  EXPECT_FALSE(env.body_8bitmime);
  EXPECT_EQ(env.received_unix, kNow);
  EXPECT_EQ(env.helo, "mx.example.com");
}

TEST(Bounce, TheBounceCanBeSpooledAndReadBack) {
  const auto dir =
      std::filesystem::temp_directory_path() /
      ("mxgate-bounce-test-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
  auto spool = queue::Spool::open(dir);
  ASSERT_TRUE(spool) << spool.error();
  const Bounce b = make_bounce(original(), kContent, two_failures(), "mx.example.com", at(kNow));
  const queue::Envelope env = bounce_envelope(original(), b, queue::new_queue_id(), "mx.example.com", kNow);
  ASSERT_TRUE(spool->store(env, b.content));
  auto loaded = spool->load(env.id);
  ASSERT_TRUE(loaded) << loaded.error();
  EXPECT_EQ(loaded->content, b.content);
  EXPECT_EQ(loaded->envelope.sender, "");
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace mxgate::delivery
