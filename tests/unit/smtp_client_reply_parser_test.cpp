// The SMTP client's reply parser (src/delivery/smtp_reply_parser.hpp): exact
// replies and exact errors, each ground at every byte split into two and
// three pieces and byte by byte (after Beast's parsegrind/failgrind).
#include "delivery/smtp_reply_parser.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace mxgate::delivery {
namespace {

using Error = ReplyParser::Error;

struct Parsed {
  std::vector<ServerReply> replies;
  Error error = Error::none;
  bool partial = false;
  std::size_t buffered = 0;

  bool operator==(const Parsed&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Parsed& p) {
  os << "{error=" << to_string(p.error) << " partial=" << p.partial << " buffered=" << p.buffered
     << " replies=[";
  for (const auto& r : p.replies) os << testing::PrintToString(r.text()) << " ";
  return os << "]}";
}

// Feeds in cut at the given ascending offsets, taking every reply as soon as
// it is complete, as the client shell does.
Parsed feed_pieces(std::string_view in, const std::vector<std::size_t>& cuts) {
  ReplyParser parser;
  Parsed p;
  std::size_t start = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(in.size());
  for (const std::size_t end : ends) {
    const auto piece = in.substr(start, end - start);
    start = end;
    const std::size_t consumed = parser.feed(piece);
    if (!parser.failed()) {
      EXPECT_EQ(consumed, piece.size());
    }
    while (parser.has_reply()) p.replies.push_back(parser.take());
    if (parser.failed()) break;
  }
  p.error = parser.error();
  // After an error only the error and the replies before it are the contract.
  p.partial = parser.failed() ? false : parser.partial();
  p.buffered = parser.failed() ? 0 : parser.buffered();
  return p;
}

Parsed one_shot(std::string_view in) { return feed_pieces(in, {}); }

// Every split into two and three pieces, and byte by byte, gives the one-shot result.
void grind(std::string_view in, const Parsed& expected) {
  ASSERT_EQ(one_shot(in), expected) << "one shot";
  for (std::size_t i = 0; i <= in.size(); ++i) {
    ASSERT_EQ(feed_pieces(in, {i}), expected) << "split at " << i;
    if (in.size() <= 200) {
      for (std::size_t j = i; j <= in.size(); ++j)
        ASSERT_EQ(feed_pieces(in, {i, j}), expected) << i << "," << j;
    }
  }
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < in.size(); ++i) every.push_back(i);
  ASSERT_EQ(feed_pieces(in, every), expected) << "byte by byte";
}

ServerReply reply(int code, std::vector<std::string> lines) { return ServerReply{code, std::move(lines)}; }

Parsed ok(std::vector<ServerReply> replies, bool partial = false, std::size_t buffered = 0) {
  return Parsed{std::move(replies), Error::none, partial, buffered};
}

Parsed failed(std::vector<ServerReply> replies, Error error) {
  // partial/buffered after an error are not part of the contract; feed_pieces zeroes them.
  return Parsed{std::move(replies), error, false, 0};
}

TEST(ReplyParser, SingleLine) { grind("250 2.1.0 Ok\r\n", ok({reply(250, {"2.1.0 Ok"})})); }

TEST(ReplyParser, MultiLineEhlo) {
  const std::string in =
      "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 36700160\r\n250-STARTTLS\r\n"
      "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
  grind(in, ok({reply(250, {"mx.example.test", "PIPELINING", "SIZE 36700160", "STARTTLS", "8BITMIME",
                            "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"})}));
}

TEST(ReplyParser, PipelinedReplies) {
  grind(
      "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 No\r\n550 5.1.1 such user\r\n354 End data with "
      "<CR><LF>.<CR><LF>\r\n",
      ok({reply(250, {"2.1.0 Ok"}), reply(250, {"2.1.5 Ok"}), reply(550, {"5.1.1 No", "5.1.1 such user"}),
          reply(354, {"End data with <CR><LF>.<CR><LF>"})}));
}

TEST(ReplyParser, BareCodeAndEmptyText) {
  // RFC 5321 4.2: "ddd" alone ends a reply; "ddd-" and "ddd " carry empty text.
  grind("250\r\n", ok({reply(250, {""})}));
  grind("250-\r\n250 \r\n", ok({reply(250, {"", ""})}));
  grind("221-\r\n221\r\n", ok({reply(221, {"", ""})}));
}

TEST(ReplyParser, BareLfTolerated) {
  grind("220 mx ESMTP\n250-a\r\n250 b\n", ok({reply(220, {"mx ESMTP"}), reply(250, {"a", "b"})}));
}

TEST(ReplyParser, CrInsideLineKept) {
  // Only one CR right before the LF belongs to the line end.
  grind("250 a\rb\r\r\n", ok({reply(250, {"a\rb\r"})}));
}

TEST(ReplyParser, PartialReplyIsBuffered) {
  grind("250-first\r\n250 sec", ok({}, true, 18));
  grind("250 done\r\n354 go", ok({reply(250, {"done"})}, true, 6));
}

TEST(ReplyParser, EveryCodeInRange) {
  for (int code = 200; code <= 559; ++code) {
    if (code % 100 >= 60) continue;
    const std::string in = std::to_string(code) + " x\r\n";
    EXPECT_EQ(one_shot(in), ok({reply(code, {"x"})})) << in;
  }
}

TEST(ReplyParser, MalformedLines) {
  for (const std::string_view bad :
       {"25 short\r\n", "\r\n", "2500 text\r\n", "250_text\r\n", "25a Ok\r\n", "a50 Ok\r\n", "150 Ok\r\n",
        "650 Ok\r\n", "260 Ok\r\n", "099 Ok\r\n", " 250 Ok\r\n", "250\tOk\r\n", "HTTP/1.1 200 OK\r\n"}) {
    grind(bad, failed({}, Error::malformed_line));
  }
  // An error after complete replies keeps those replies.
  grind("250 Ok\r\nbogus\r\n250 never\r\n", failed({reply(250, {"Ok"})}, Error::malformed_line));
}

TEST(ReplyParser, CodeChangeInsideReply) {
  grind("250-a\r\n251 b\r\n", failed({}, Error::inconsistent_code));
  grind("250-a\r\n550 b\r\n", failed({}, Error::inconsistent_code));
  grind("220 hi\r\n250-a\r\n250-b\r\n251-c\r\n", failed({reply(220, {"hi"})}, Error::inconsistent_code));
}

TEST(ReplyParser, LineLengthLimit) {
  constexpr std::size_t max = ReplyParser::kMaxLineLength;
  // 4096 octets with CRLF: accepted.
  const std::string at_limit = "250 " + std::string(max - 6, 'x') + "\r\n";
  ASSERT_EQ(at_limit.size(), max);
  grind(at_limit, ok({reply(250, {std::string(max - 6, 'x')})}));
  // 4096 with a bare LF also fits.
  const std::string lf_limit = "250 " + std::string(max - 5, 'x') + "\n";
  ASSERT_EQ(lf_limit.size(), max);
  EXPECT_EQ(one_shot(lf_limit), ok({reply(250, {std::string(max - 5, 'x')})}));
  // One more octet: an error, whether or not the line end has arrived.
  const std::string past = "250 " + std::string(max - 5, 'x') + "\r\n";
  ASSERT_EQ(past.size(), max + 1);
  grind(past, failed({}, Error::line_too_long));
  grind(past.substr(0, max), failed({}, Error::line_too_long));
  // A line that never ends does not grow the buffer without bound.
  grind(std::string(3 * max, 'y'), failed({}, Error::line_too_long));
}

// A reply of `total` octets: 15 continuation lines of 4096, one of the
// rest minus 5, and a bare "250\r\n" (5 octets) to end it.
std::string reply_of_size(std::size_t total, std::vector<std::string>& lines) {
  std::string in;
  lines.clear();
  for (int i = 0; i < 15; ++i) {
    lines.emplace_back(ReplyParser::kMaxLineLength - 6, static_cast<char>('a' + i));
    in += "250-" + lines.back() + "\r\n";
  }
  lines.emplace_back(total - in.size() - 5 - 6, 'z');
  in += "250-" + lines.back() + "\r\n";
  lines.emplace_back();
  in += "250\r\n";
  return in;
}

TEST(ReplyParser, ReplySizeLimit) {
  constexpr std::size_t max = ReplyParser::kMaxReplySize;
  std::vector<std::string> lines;
  const std::string at_limit = reply_of_size(max, lines);
  ASSERT_EQ(at_limit.size(), max);
  const Parsed accepted = ok({reply(250, lines)});
  EXPECT_EQ(one_shot(at_limit), accepted);
  // Grinding the big input: every cut near line boundaries, every 97th elsewhere.
  for (std::size_t i = 0; i <= at_limit.size(); i += (i % 4096 < 8 || i % 4096 > 4088 ? 1 : 97))
    ASSERT_EQ(feed_pieces(at_limit, {i}), accepted) << i;

  // One more octet: the line that crosses the bound is the error.
  const std::string past = reply_of_size(max + 1, lines);
  ASSERT_EQ(past.size(), max + 1);
  EXPECT_EQ(one_shot(past), failed({}, Error::reply_too_long));
  for (std::size_t i = 0; i <= past.size(); i += (i > past.size() - 16 ? 1 : 101))
    ASSERT_EQ(feed_pieces(past, {i}), failed({}, Error::reply_too_long)) << i;
  // A reply before it is kept.
  EXPECT_EQ(one_shot("220 hi\r\n" + past), failed({reply(220, {"hi"})}, Error::reply_too_long));
}

TEST(ReplyParser, ErrorIsSticky) {
  ReplyParser parser;
  parser.feed("bad\r\n");
  ASSERT_TRUE(parser.failed());
  EXPECT_EQ(parser.feed("250 Ok\r\n"), 0u);
  EXPECT_FALSE(parser.has_reply());
  parser.discard();
  EXPECT_TRUE(parser.failed());
}

TEST(ReplyParser, DiscardDropsQueuedAndPartial) {
  // The STARTTLS case: 220 and an injected reply in one read.
  ReplyParser parser;
  const std::string_view in = "220 2.0.0 Ready to start TLS\r\n250 injected\r\n250-part";
  EXPECT_EQ(parser.feed(in), in.size());
  ASSERT_TRUE(parser.has_reply());
  EXPECT_EQ(parser.take(), reply(220, {"2.0.0 Ready to start TLS"}));
  EXPECT_EQ(parser.buffered(), in.size() - 30);
  EXPECT_EQ(parser.discard(), in.size() - 30);
  EXPECT_FALSE(parser.has_reply());
  EXPECT_FALSE(parser.partial());
  EXPECT_EQ(parser.buffered(), 0u);
  // What comes next is parsed from a clean state.
  parser.feed("250 real\r\n");
  ASSERT_TRUE(parser.has_reply());
  EXPECT_EQ(parser.take(), reply(250, {"real"}));
}

TEST(ReplyParser, Text) {
  EXPECT_EQ(reply(550, {"5.1.1 No such user"}).text(), "550 5.1.1 No such user");
  EXPECT_EQ(reply(550, {"5.1.1 First", "5.1.1 Second"}).text(), "550-5.1.1 First 550 5.1.1 Second");
  EXPECT_EQ(reply(250, {""}).text(), "250");
  EXPECT_EQ(reply(250, {"", ""}).text(), "250- 250");
}

}  // namespace
}  // namespace mxgate::delivery
