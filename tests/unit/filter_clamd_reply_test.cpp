// The clamd client's pure core (src/filter/clamd_client.hpp), no socket:
// the reply reader ground at every split into two and three pieces and byte
// by byte (after Beast's parsegrind/failgrind), its limit at 4096 and 4097,
// the reply parser's exact verdicts and exact errors, the endpoint parser,
// and the INSTREAM framer's exact bytes.
#include "filter/clamd_client.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace mxgate::filter {
namespace {

using namespace std::string_literals;
using State = ClamdReplyReader::State;

// ---------------------------------------------------------------------------
// ClamdReplyReader

struct Read {
  State state = State::need_more;
  std::string reply;         // when done
  std::string error;         // when failed
  std::size_t consumed = 0;  // in total, when done

  bool operator==(const Read&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Read& r) {
  return os << "{state=" << static_cast<int>(r.state) << " reply=" << testing::PrintToString(r.reply)
            << " error=" << testing::PrintToString(r.error) << " consumed=" << r.consumed << "}";
}

// Feeds in cut at the ascending offsets, then EOF if eof, as the client
// shell does: it stops feeding once the reader is no longer need_more.
Read feed_pieces(std::string_view in, const std::vector<std::size_t>& cuts, bool eof) {
  ClamdReplyReader reader;
  Read r;
  std::size_t start = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(in.size());
  for (const std::size_t end : ends) {
    const std::string_view piece = in.substr(start, end - start);
    start = end;
    if (reader.state() != State::need_more) break;
    const std::size_t consumed = reader.feed(piece);
    if (reader.state() == State::need_more) {
      EXPECT_EQ(consumed, piece.size());
    }
    if (!reader.failed()) r.consumed += consumed;
  }
  if (eof) reader.feed_eof();
  r.state = reader.state();
  if (reader.done()) r.reply = reader.reply();
  if (reader.failed()) {
    r.error = reader.error();
    r.consumed = 0;  // after an error only the error is the contract
  }
  return r;
}

void grind(std::string_view in, bool eof, const Read& expected) {
  ASSERT_EQ(feed_pieces(in, {}, eof), expected) << "one shot";
  for (std::size_t i = 0; i <= in.size(); ++i) {
    ASSERT_EQ(feed_pieces(in, {i}, eof), expected) << "split at " << i;
    if (in.size() <= 200) {
      for (std::size_t j = i; j <= in.size(); ++j)
        ASSERT_EQ(feed_pieces(in, {i, j}, eof), expected) << i << "," << j;
    }
  }
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < in.size(); ++i) every.push_back(i);
  ASSERT_EQ(feed_pieces(in, every, eof), expected) << "byte by byte";
}

Read done(std::string reply, std::size_t consumed) {
  return Read{State::done, std::move(reply), "", consumed};
}
Read failed(std::string error) { return Read{State::failed, "", std::move(error), 0}; }
Read need_more(std::size_t consumed) { return Read{State::need_more, "", "", consumed}; }

TEST(ClamdReplyReader, CompleteReplies) {
  for (const std::string reply : {"stream: OK", "stream: Eicar-Signature.UNOFFICIAL FOUND",
                                  "INSTREAM size limit exceeded. ERROR", "PONG", "UNKNOWN COMMAND", ""}) {
    SCOPED_TRACE(reply);
    grind(reply + '\0', false, done(reply, reply.size() + 1));
    grind(reply + '\0', true, done(reply, reply.size() + 1));  // EOF after the NUL changes nothing
  }
}

TEST(ClamdReplyReader, BytesAfterTheNulAreNotConsumed) {
  // AllMatchScanning sends one reply per signature: the first decides.
  grind("stream: A FOUND\0stream: B FOUND\0"s, false, done("stream: A FOUND", 16));
  grind("PONG\0junk"s, true, done("PONG", 5));
  ClamdReplyReader reader;
  EXPECT_EQ(reader.feed("PONG\0PONG\0"s), 5u);
  EXPECT_EQ(reader.feed("more"), 0u);
  reader.feed_eof();
  EXPECT_TRUE(reader.done());
  EXPECT_EQ(reader.reply(), "PONG");
}

TEST(ClamdReplyReader, Incomplete) {
  grind("stream: O", false, need_more(9));
  grind("", false, need_more(0));
}

TEST(ClamdReplyReader, EndOfStream) {
  grind("", true, failed("connection closed before the reply"));
  grind("stream: OK", true, failed("connection closed in the middle of the reply"));
  // A reply ended by a newline (clamd's non-"z" commands) is not ours.
  grind("stream: OK\n", true, failed("connection closed in the middle of the reply"));
}

TEST(ClamdReplyReader, LimitAtAndPastIt) {
  const std::size_t limit = ClamdReplyReader::kMaxReplySize;
  ASSERT_EQ(limit, 4096u);
  const std::string at(limit, 'a');
  const std::string past(limit + 1, 'a');
  const std::string too_long = "reply longer than 4096 bytes";
  grind(at + '\0', false, done(at, limit + 1));
  grind(at, false, need_more(limit));
  grind(at, true, failed("connection closed in the middle of the reply"));
  grind(past + '\0', false, failed(too_long));
  grind(past, false, failed(too_long));
  grind(past, true, failed(too_long));
}

// ---------------------------------------------------------------------------
// parse_clamd_reply

void expect_clean(std::string_view reply) {
  for (const std::string& in : {std::string(reply), std::string(reply) + '\0'}) {
    const auto v = parse_clamd_reply(in);
    ASSERT_TRUE(v) << testing::PrintToString(in) << ": " << v.error();
    EXPECT_FALSE(v->infected);
    EXPECT_EQ(v->signature, "");
  }
}

void expect_found(std::string_view reply, std::string_view signature) {
  for (const std::string& in : {std::string(reply), std::string(reply) + '\0'}) {
    const auto v = parse_clamd_reply(in);
    ASSERT_TRUE(v) << testing::PrintToString(in) << ": " << v.error();
    EXPECT_TRUE(v->infected);
    EXPECT_EQ(v->signature, signature);
  }
}

void expect_error(std::string_view reply, std::string_view error) {
  const auto v = parse_clamd_reply(reply);
  ASSERT_FALSE(v) << testing::PrintToString(reply);
  EXPECT_EQ(v.error(), error) << testing::PrintToString(reply);
}

TEST(ClamdReply, Clean) { expect_clean("stream: OK"); }

TEST(ClamdReply, Found) {
  expect_found("stream: Eicar-Signature FOUND", "Eicar-Signature");
  expect_found("stream: Eicar-Signature.UNOFFICIAL FOUND", "Eicar-Signature.UNOFFICIAL");
  expect_found("stream: Win.Test.EICAR_HDB-1 FOUND", "Win.Test.EICAR_HDB-1");
  expect_found("stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND",
               "Heuristics.Limits.Exceeded.MaxFileSize");
  expect_found("stream: OK FOUND", "OK");
  expect_found("stream: X FOUND", "X");
}

TEST(ClamdReply, ErrorReplies) {
  expect_error("INSTREAM size limit exceeded. ERROR"s + '\0', "clamd error: INSTREAM size limit exceeded.");
  expect_error("INSTREAM size limit exceeded. ERROR", "clamd error: INSTREAM size limit exceeded.");
  expect_error("stream: Can't allocate memory ERROR"s + '\0', "clamd error: Can't allocate memory");
  expect_error("stream: bad \"name\"\x01 ERROR", "clamd error: bad \\\"name\\\"\\x01");
  expect_error(" ERROR", "clamd error: ");
}

TEST(ClamdReply, Unexpected) {
  expect_error("", "unexpected clamd reply: \"\"");
  expect_error("\0"s, "unexpected clamd reply: \"\\x00\"");
  expect_error("stream: OK\0\0"s, "unexpected clamd reply: \"stream: OK\\x00\\x00\"");
  expect_error("stream: OK\0stream: OK\0"s, "unexpected clamd reply: \"stream: OK\\x00stream: OK\\x00\"");
  expect_error("stream: OK\n", "unexpected clamd reply: \"stream: OK\\x0a\"");
  expect_error("stream: ok", "unexpected clamd reply: \"stream: ok\"");
  expect_error("stream:OK", "unexpected clamd reply: \"stream:OK\"");
  expect_error("1: stream: OK", "unexpected clamd reply: \"1: stream: OK\"");  // IDSESSION form
  expect_error("UNKNOWN COMMAND", "unexpected clamd reply: \"UNKNOWN COMMAND\"");
  expect_error("COMMAND READ TIMED OUT", "unexpected clamd reply: \"COMMAND READ TIMED OUT\"");
  expect_error("PONG", "unexpected clamd reply: \"PONG\"");
  expect_error("ERROR", "unexpected clamd reply: \"ERROR\"");
  // FOUND without a usable name.
  expect_error("stream: FOUND", "unexpected clamd reply: \"stream: FOUND\"");
  expect_error("stream:  FOUND", "unexpected clamd reply: \"stream:  FOUND\"");
  expect_error("stream:   FOUND", "unexpected clamd reply: \"stream:   FOUND\"");
  expect_error("stream:  X FOUND", "unexpected clamd reply: \"stream:  X FOUND\"");
  expect_error("stream: X  FOUND", "unexpected clamd reply: \"stream: X  FOUND\"");
  expect_error("stream: a\tb FOUND", "unexpected clamd reply: \"stream: a\\x09b FOUND\"");
  expect_error("stream: \xc3\xa9 FOUND", "unexpected clamd reply: \"stream: \\xc3\\xa9 FOUND\"");
  expect_error("stream: X FOUND\0 "s, "unexpected clamd reply: \"stream: X FOUND\\x00 \"");
  expect_error("FOUND", "unexpected clamd reply: \"FOUND\"");
  expect_error("X FOUND", "unexpected clamd reply: \"X FOUND\"");
}

TEST(ClamdReply, QuotedTextIsCutAt200Bytes) {
  expect_error(std::string(200, 'x'), "unexpected clamd reply: \"" + std::string(200, 'x') + "\"");
  expect_error(std::string(201, 'x'), "unexpected clamd reply: \"" + std::string(200, 'x') + "\"...");
  expect_error(std::string(5000, 'y') + " ERROR", "clamd error: " + std::string(200, 'y') + "...");
}

// ---------------------------------------------------------------------------
// Endpoints

void expect_endpoint(std::string_view text, const ClamdEndpoint& expected, std::string_view canonical) {
  auto e = parse_clamd_endpoint(text);
  ASSERT_TRUE(e) << text << ": " << e.error();
  EXPECT_EQ(e->kind, expected.kind) << text;
  EXPECT_EQ(e->path, expected.path) << text;
  EXPECT_EQ(e->host, expected.host) << text;
  EXPECT_EQ(e->port, expected.port) << text;
  EXPECT_EQ(to_string(*e), canonical) << text;
  auto again = parse_clamd_endpoint(to_string(*e));
  ASSERT_TRUE(again) << again.error();
  EXPECT_EQ(to_string(*again), canonical);
}

ClamdEndpoint unix_endpoint(std::string path) {
  return ClamdEndpoint{ClamdEndpoint::Kind::unix_socket, path, "", 0};
}
ClamdEndpoint tcp_endpoint(std::string host, std::uint16_t port) {
  return ClamdEndpoint{ClamdEndpoint::Kind::tcp, "", host, port};
}

TEST(ClamdEndpoint, Valid) {
  expect_endpoint("unix:/run/clamav/clamd.ctl", unix_endpoint("/run/clamav/clamd.ctl"),
                  "unix:/run/clamav/clamd.ctl");
  expect_endpoint("unix:/a b:c", unix_endpoint("/a b:c"), "unix:/a b:c");
  expect_endpoint("tcp:127.0.0.1:3310", tcp_endpoint("127.0.0.1", 3310), "tcp:127.0.0.1:3310");
  expect_endpoint("tcp:[::1]:3310", tcp_endpoint("::1", 3310), "tcp:[::1]:3310");
  expect_endpoint("tcp:[0:0:0::1]:1", tcp_endpoint("::1", 1), "tcp:[::1]:1");
  expect_endpoint("tcp:[2001:DB8::5]:65535", tcp_endpoint("2001:db8::5", 65535), "tcp:[2001:db8::5]:65535");
  expect_endpoint("tcp:10.0.0.1:00080", tcp_endpoint("10.0.0.1", 80), "tcp:10.0.0.1:80");
}

TEST(ClamdEndpoint, UnixPathLimit) {
  const std::string at = "/" + std::string(kMaxUnixPath - 1, 'p');
  const std::string past = "/" + std::string(kMaxUnixPath, 'p');
  ASSERT_EQ(at.size(), 107u);
  expect_endpoint("unix:" + at, unix_endpoint(at), "unix:" + at);
  const auto e = parse_clamd_endpoint("unix:" + past);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error(), "clamd endpoint \"unix:" + past + "\": the socket path is longer than 107 bytes");
}

TEST(ClamdEndpoint, Invalid) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "not \"unix:/path\", \"tcp:address:port\" or \"tcp:[v6-address]:port\""},
      {"/run/clamav/clamd.ctl", "not \"unix:/path\", \"tcp:address:port\" or \"tcp:[v6-address]:port\""},
      {"UNIX:/run/clamd.ctl", "not \"unix:/path\", \"tcp:address:port\" or \"tcp:[v6-address]:port\""},
      {"udp:127.0.0.1:3310", "not \"unix:/path\", \"tcp:address:port\" or \"tcp:[v6-address]:port\""},
      {"unix:", "no socket path after \"unix:\""},
      {"unix:clamd.ctl", "the socket path must be absolute"},
      {"unix:/a\0b"s, "NUL in the socket path"},
      {"tcp:", "no \":port\" after the address"},
      {"tcp:127.0.0.1", "no \":port\" after the address"},
      {"tcp:127.0.0.1:", "the port must be a number 1..65535"},
      {"tcp:127.0.0.1:0", "the port must be a number 1..65535"},
      {"tcp:127.0.0.1:65536", "the port must be a number 1..65535"},
      {"tcp:127.0.0.1:100000", "the port must be a number 1..65535"},
      {"tcp:127.0.0.1:+1", "the port must be a number 1..65535"},
      {"tcp:127.0.0.1:-1", "the port must be a number 1..65535"},
      {"tcp:127.0.0.1:33 10", "the port must be a number 1..65535"},
      {"tcp:127.0.0.1:3310x", "the port must be a number 1..65535"},
      {"tcp:localhost:3310", "\"localhost\" is not an IPv4 address (names are not looked up)"},
      {"tcp:127.1:3310", "\"127.1\" is not an IPv4 address (names are not looked up)"},
      {"tcp::3310", "\"\" is not an IPv4 address (names are not looked up)"},
      {"tcp:::1:3310", "an IPv6 address must be in brackets: tcp:[::1]:3310"},
      {"tcp:[::1]", "no \":port\" after the address"},
      {"tcp:[::1]3310", "no \":port\" after the address"},
      {"tcp:[::1:3310", "no \"]\" after the IPv6 address"},
      {"tcp:[127.0.0.1]:3310", "\"127.0.0.1\" is not an IPv6 address"},
      {"tcp:[]:3310", "\"\" is not an IPv6 address"},
  };
  for (const auto& [text, why] : cases) {
    const auto e = parse_clamd_endpoint(text);
    ASSERT_FALSE(e) << testing::PrintToString(text);
    EXPECT_EQ(e.error(), "clamd endpoint \"" + std::string(text == "unix:/a\0b"s ? "unix:/a\\x00b" : text) +
                             "\": " + why);
  }
}

// ---------------------------------------------------------------------------
// ClamdInstreamFramer

struct Framed {
  std::string bytes;
  std::size_t pieces = 0;
  std::size_t largest_payload = 0;
};

Framed frame(std::string_view data, std::size_t chunk_size) {
  ClamdInstreamFramer framer(data, chunk_size);
  Framed out;
  while (!framer.done()) {
    const auto piece = framer.next();
    out.bytes.append(piece.prefix).append(piece.payload).append(piece.suffix);
    ++out.pieces;
    out.largest_payload = std::max(out.largest_payload, piece.payload.size());
    EXPECT_EQ(piece.suffix.empty(), !framer.done());
  }
  return out;
}

// What the framer must produce, written independently.
std::string expected_stream(std::string_view data, std::size_t chunk_size) {
  std::string out = "zINSTREAM"s + '\0';
  for (std::size_t at = 0; at < data.size(); at += chunk_size) {
    const std::size_t n = std::min(chunk_size, data.size() - at);
    out += static_cast<char>((n >> 24) & 0xff);
    out += static_cast<char>((n >> 16) & 0xff);
    out += static_cast<char>((n >> 8) & 0xff);
    out += static_cast<char>(n & 0xff);
    out.append(data.substr(at, n));
  }
  return out + std::string(4, '\0');
}

TEST(ClamdInstreamFramer, ExactBytes) {
  EXPECT_EQ(frame("", 10).bytes, "zINSTREAM\0\0\0\0\0"s);
  EXPECT_EQ(frame("", 10).pieces, 1u);
  EXPECT_EQ(frame("abc", 2).bytes, "zINSTREAM\0\0\0\0\2ab\0\0\0\1c\0\0\0\0"s);
  const std::string data(0x12c, 'd');  // a length with two significant bytes: 00 00 01 2c
  EXPECT_EQ(frame(data, 1000).bytes, "zINSTREAM\0\0\0\x01\x2c"s + data + std::string(4, '\0'));
}

TEST(ClamdInstreamFramer, EverySizeAroundTheChunk) {
  std::string data;
  for (int i = 0; i < 64; ++i) data += static_cast<char>(i * 7);
  for (const std::size_t chunk : {1u, 2u, 7u, 10u, 63u, 64u, 65u}) {
    for (std::size_t size = 0; size <= data.size(); ++size) {
      const auto framed = frame(std::string_view(data).substr(0, size), chunk);
      EXPECT_EQ(framed.bytes, expected_stream(data.substr(0, size), chunk)) << size << "/" << chunk;
      EXPECT_EQ(framed.pieces, size == 0 ? 1 : (size + chunk - 1) / chunk) << size << "/" << chunk;
      EXPECT_LE(framed.largest_payload, chunk);
    }
  }
}

TEST(ClamdInstreamFramer, ChunkSizeZeroMeansOne) {
  EXPECT_EQ(frame("ab", 0).bytes, expected_stream("ab", 1));
}

}  // namespace
}  // namespace mxgate::filter
