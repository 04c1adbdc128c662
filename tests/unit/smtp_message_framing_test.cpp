// Message content framing (src/smtp/message_framing.hpp): DATA end detection,
// dot-unstuffing, bare CR/LF (SMTP smuggling) and BDAT line endings, each
// ground at every byte split (after Beast's parsegrind).
#include "smtp/message_framing.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace mxgate::smtp {
namespace {

using namespace std::string_view_literals;

struct Outcome {
  std::string out;
  std::size_t consumed = 0;
  bool done = false;
  bool bare_newline = false;
  std::uint64_t size = 0;

  bool operator==(const Outcome&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  return os << "{out=" << testing::PrintToString(o.out) << " consumed=" << o.consumed << " done=" << o.done
            << " bare=" << o.bare_newline << " size=" << o.size << "}";
}

// Feeds in to a fresh decoder cut at the given ascending offsets, the way a
// session would: stop at the end of data, and check that a feed that does not
// end the data uses all of its input.
Outcome feed_pieces(std::string_view in, const std::vector<std::size_t>& cuts, bool keep = true) {
  DataDecoder decoder;
  Outcome o;
  std::size_t start = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(in.size());
  for (const std::size_t end : ends) {
    const auto piece = in.substr(start, end - start);
    start = end;
    const auto progress = decoder.feed(piece, keep ? &o.out : nullptr);
    o.consumed += progress.consumed;
    if (progress.done) {
      o.done = true;
      EXPECT_LE(progress.consumed, piece.size());
      break;
    }
    EXPECT_EQ(progress.consumed, piece.size()) << "a feed that does not end DATA uses all input";
  }
  o.bare_newline = decoder.bare_newline();
  o.size = decoder.content_size();
  return o;
}

Outcome one_shot(std::string_view in) { return feed_pieces(in, {}); }

// Every split into two pieces, every split into three pieces, byte by byte,
// and without keeping content: all give the one-shot result.
void grind(std::string_view in) {
  SCOPED_TRACE(testing::PrintToString(std::string(in)));
  const Outcome whole = one_shot(in);
  EXPECT_EQ(whole.size, whole.out.size());
  for (std::size_t i = 0; i <= in.size(); ++i) {
    ASSERT_EQ(feed_pieces(in, {i}), whole) << "split at " << i;
    for (std::size_t j = i; j <= in.size(); ++j)
      ASSERT_EQ(feed_pieces(in, {i, j}), whole) << "split at " << i << "," << j;
  }
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < in.size(); ++i) every.push_back(i);
  EXPECT_EQ(feed_pieces(in, every), whole) << "byte by byte";
  Outcome counted = feed_pieces(in, every, false);
  EXPECT_EQ(counted.out, "");
  counted.out = whole.out;
  EXPECT_EQ(counted, whole) << "counting without keeping";
}

// --- End of data and dot-unstuffing ------------------------------------------------

TEST(DataDecoderTest, EndsAtCrlfDotCrlf) {
  const Outcome o = one_shot("Hello\r\n.\r\n");
  EXPECT_EQ(o, (Outcome{"Hello\r\n", 10, true, false, 7}));
}

TEST(DataDecoderTest, EmptyMessage) {
  // DATA content starts right after the command's CRLF, so ".\r\n" first ends it.
  EXPECT_EQ(one_shot(".\r\n"), (Outcome{"", 3, true, false, 0}));
}

TEST(DataDecoderTest, EmptyInputNeedsMore) {
  DataDecoder d;
  std::string out;
  const auto p = d.feed("", &out);
  EXPECT_EQ(p.consumed, 0u);
  EXPECT_FALSE(p.done);
  EXPECT_EQ(out, "");
}

TEST(DataDecoderTest, EmptyLinesAreContent) {
  EXPECT_EQ(one_shot("\r\n\r\n.\r\n"), (Outcome{"\r\n\r\n", 7, true, false, 4}));
}

TEST(DataDecoderTest, DotUnstuffing) {
  EXPECT_EQ(one_shot("..leading\r\n.\r\n").out, ".leading\r\n");
  EXPECT_EQ(one_shot("..\r\n.\r\n").out, ".\r\n");
  EXPECT_EQ(one_shot("...\r\n.\r\n").out, "..\r\n");
  EXPECT_EQ(one_shot(".x\r\n.\r\n").out, "x\r\n");
  EXPECT_EQ(one_shot(". \r\n.\r\n").out, " \r\n");
  EXPECT_EQ(one_shot("a\r\n..\r\nb\r\n.\r\n").out, "a\r\n.\r\nb\r\n");
}

TEST(DataDecoderTest, DotInsideALineIsKept) {
  EXPECT_EQ(one_shot("a.b\r\nc.\r\n.\r\n").out, "a.b\r\nc.\r\n");
  EXPECT_EQ(one_shot(" .\r\n.\r\n").out, " .\r\n");
}

TEST(DataDecoderTest, ConsumedExcludesBytesAfterEnd) {
  const std::string in = "Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n";
  const Outcome o = one_shot(in);
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.consumed, in.size() - 6);
  EXPECT_EQ(o.out, "Subject: x\r\n\r\nbody\r\n");
  EXPECT_FALSE(o.bare_newline);
}

TEST(DataDecoderTest, NothingAfterEndIsDecoded) {
  DataDecoder d;
  std::string out;
  const auto p = d.feed("a\r\n.\r\n.\r\nb\n", &out);
  EXPECT_TRUE(p.done);
  EXPECT_EQ(p.consumed, 6u);
  EXPECT_EQ(out, "a\r\n");
  EXPECT_FALSE(d.bare_newline()) << "the bare LF after the end belongs to the next command";
}

TEST(DataDecoderTest, NotDoneWithoutFinalCrlf) {
  for (const auto in : {"a\r\n."sv, "a\r\n.\r"sv, "a\r\n"sv, "a"sv, "."sv, ".\r"sv}) {
    SCOPED_TRACE(testing::PrintToString(std::string(in)));
    const Outcome o = one_shot(in);
    EXPECT_FALSE(o.done);
    EXPECT_EQ(o.consumed, in.size());
  }
}

TEST(DataDecoderTest, NulAndEightBitBytesPassThrough) {
  const std::string in("a\0b\xff\x80\r\n.\r\n", 10);
  const Outcome o = one_shot(in);
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.out, std::string("a\0b\xff\x80\r\n", 7));
  EXPECT_FALSE(o.bare_newline);
}

TEST(DataDecoderTest, ContentSizeCountsDecodedBytes) {
  const Outcome o = one_shot("..ab\r\n.\r\n");
  EXPECT_EQ(o.out, ".ab\r\n");
  EXPECT_EQ(o.size, 5u);
}

// --- SMTP smuggling: no line ending but CRLF ends the data -----------------------------

struct SmugglingCase {
  std::string_view name;
  std::string_view variant;
  std::string_view decoded;  // of "a" + variant + "MAIL FROM:<e@x>\r\n"
};

const SmugglingCase kSmuggling[] = {
    {"lf_dot_lf", "\n.\n", "a\n.\nMAIL FROM:<e@x>\r\n"},
    {"cr_dot_cr", "\r.\r", "a\r.\rMAIL FROM:<e@x>\r\n"},
    {"lf_dot_crlf", "\n.\r\n", "a\n.\r\nMAIL FROM:<e@x>\r\n"},
    {"crlf_dot_cr", "\r\n.\r", "a\r\n.\rMAIL FROM:<e@x>\r\n"},
    {"crlf_dot_lf", "\r\n.\n", "a\r\n\nMAIL FROM:<e@x>\r\n"},
    {"crlf_dot_cr_crlf", "\r\n.\r\r\n", "a\r\n.\r\r\nMAIL FROM:<e@x>\r\n"},
};

TEST(DataDecoderSmuggling, VariantNeverEndsDataThenCrlfDotCrlfDoes) {
  for (const auto& c : kSmuggling) {
    SCOPED_TRACE(std::string(c.name));
    const std::string smuggled = "a" + std::string(c.variant) + "MAIL FROM:<e@x>\r\n";
    DataDecoder d;
    std::string out;
    const auto first = d.feed(smuggled, &out);
    EXPECT_FALSE(first.done);
    EXPECT_EQ(first.consumed, smuggled.size());
    EXPECT_TRUE(d.bare_newline());
    EXPECT_EQ(out, c.decoded);
    const auto second = d.feed(".\r\nRCPT TO:<v@y>\r\n", &out);
    EXPECT_TRUE(second.done);
    EXPECT_EQ(second.consumed, 3u);
    EXPECT_TRUE(d.bare_newline());
    EXPECT_EQ(out, c.decoded);
  }
}

TEST(DataDecoderSmuggling, VariantAtEndOfInputThenProperEnd) {
  for (const auto& c : kSmuggling) {
    SCOPED_TRACE(std::string(c.name));
    const std::string in = "a" + std::string(c.variant) + "\r\n.\r\n";
    const Outcome o = one_shot(in);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.consumed, in.size());
    EXPECT_TRUE(o.bare_newline);
  }
}

TEST(DataDecoderSmuggling, VariantAsTheVeryFirstBytes) {
  // Content starts at a line start, so a leading "." is the dot-line case.
  for (const auto in : {".\n"sv, ".\r"sv, ".\rx"sv, "\n.\n"sv, "\r.\r"sv, "\n.\r\n"sv}) {
    SCOPED_TRACE(testing::PrintToString(std::string(in)));
    const std::string msg = std::string(in) + "x\r\n";
    const Outcome o = one_shot(msg);
    EXPECT_FALSE(o.done);
    EXPECT_EQ(o.consumed, msg.size());
    EXPECT_TRUE(o.bare_newline);
  }
}

TEST(DataDecoderSmuggling, ProperMessageIsNotFlagged) {
  const Outcome o = one_shot("From: a@b\r\nTo: c@d\r\n\r\nline\r\n..dot\r\n.\r\n");
  EXPECT_TRUE(o.done);
  EXPECT_FALSE(o.bare_newline);
}

TEST(DataDecoderSmuggling, BareCrAndLfInsideText) {
  EXPECT_TRUE(one_shot("a\nb\r\n.\r\n").bare_newline);
  EXPECT_TRUE(one_shot("a\rb\r\n.\r\n").bare_newline);
  EXPECT_TRUE(one_shot("a\r\r\n.\r\n").bare_newline);
  EXPECT_EQ(one_shot("a\r\r\n.\r\n").out, "a\r\r\n");
  EXPECT_TRUE(one_shot("a\n\r\n.\r\n").bare_newline);
}

// --- The grind ---------------------------------------------------------------------------

TEST(DataDecoderGrind, EveryMessageAtEverySplit) {
  std::vector<std::string> messages = {
      "Hello\r\n.\r\n",
      ".\r\n",
      "\r\n.\r\n",
      "..\r\n.\r\n",
      "Subject: t\r\n\r\n..stuffed\r\n...\r\n.x\r\n.\r\n.\r\n",
      "a\r\n.\r\nQUIT\r\n",
      "x\r\r\n.\r\n",
      "a\r\n.\r",
      "a\r\n.",
      "no end at all",
      ".\r.\r\n.\r\n",
      "..\r\r\n.\r\n",
      std::string("bin\0ary\xff\r\n\x80.\r\n.\r\n", 17),
  };
  for (const auto& c : kSmuggling) {
    messages.push_back("a" + std::string(c.variant) + "MAIL FROM:<e@x>\r\n.\r\nRSET\r\n");
    messages.push_back("a" + std::string(c.variant) + "\r\n.\r\n");
    messages.push_back(std::string(c.variant) + "." + std::string(c.variant) + ".\r\n.\r\n");
  }
  for (const auto& m : messages) grind(m);
}

// --- BDAT line endings --------------------------------------------------------------------

bool check_line_endings(const std::vector<std::string_view>& chunks) {
  LineEndingChecker checker;
  for (const auto chunk : chunks) checker.feed(chunk);
  checker.finish();
  return checker.bare_newline();
}

TEST(LineEndingCheckerTest, CrlfOnlyIsClean) {
  EXPECT_FALSE(check_line_endings({}));
  EXPECT_FALSE(check_line_endings({""}));
  EXPECT_FALSE(check_line_endings({"a\r\nb\r\n"}));
  EXPECT_FALSE(check_line_endings({"no line end at all"}));
  EXPECT_FALSE(check_line_endings({"\r\n\r\n"}));
}

TEST(LineEndingCheckerTest, BareLfAndBareCr) {
  EXPECT_TRUE(check_line_endings({"a\nb"}));
  EXPECT_TRUE(check_line_endings({"\n"}));
  EXPECT_TRUE(check_line_endings({"a\rb"}));
  EXPECT_TRUE(check_line_endings({"a\r\r\n"}));
  EXPECT_TRUE(check_line_endings({"a\n\r\n"}));
  EXPECT_TRUE(check_line_endings({"a\r\n.\n"}));
}

TEST(LineEndingCheckerTest, TrailingCrIsBareOnlyAtFinish) {
  LineEndingChecker checker;
  checker.feed("a\r");
  EXPECT_FALSE(checker.bare_newline());
  checker.finish();
  EXPECT_TRUE(checker.bare_newline());
}

TEST(LineEndingCheckerTest, CrlfSplitAcrossChunks) {
  EXPECT_FALSE(check_line_endings({"a\r", "\nb\r\n"}));
  EXPECT_FALSE(check_line_endings({"a\r", "", "\n"}));
  EXPECT_TRUE(check_line_endings({"a\r", "b\r\n"}));
  EXPECT_TRUE(check_line_endings({"a\r\n", "\n"}));
  EXPECT_TRUE(check_line_endings({"a", "\nb"}));
}

TEST(LineEndingCheckerTest, GrindAtEverySplit) {
  const std::vector<std::string> inputs = {
      "a\r\nb\r\n",
      "a\nb\r\n",
      "a\rb\r\n",
      "\r\n",
      "\r",
      "\n",
      "a\r\r\n",
      "x\r\n.\r\n",
      "a\r\n.\r",
      "\r\n\r\n\r\n",
      std::string("\0\r\n\xff\r\n", 6),
  };
  for (const auto& in : inputs) {
    SCOPED_TRACE(testing::PrintToString(in));
    const bool whole = check_line_endings({in});
    for (std::size_t i = 0; i <= in.size(); ++i) {
      const std::string_view v(in);
      for (std::size_t j = i; j <= in.size(); ++j)
        ASSERT_EQ(check_line_endings({v.substr(0, i), v.substr(i, j - i), v.substr(j)}), whole)
            << i << "," << j;
    }
  }
}

// --- The decoder against a byte-at-a-time reference ---------------------------------

// RFC 5321 4.5.2 and our smuggling rules written as plainly as possible, one
// byte at a time: the decoder's fast path for ordinary lines must agree.
Outcome reference_decode(std::string_view in) {
  Outcome o;
  bool line_start = true;
  std::size_t i = 0;
  auto bare = [&] { o.bare_newline = true; };
  while (i < in.size()) {
    if (line_start && in[i] == '.') {
      if (i + 2 < in.size() && in[i + 1] == '\r' && in[i + 2] == '\n') {
        o.consumed = i + 3;
        o.done = true;
        break;
      }
      if (i + 1 < in.size() && in[i + 1] == '\r' && i + 2 >= in.size()) break;  // ".\r" at the end: need more
      if (i + 1 >= in.size()) break;                                               // "." at the end: need more
      ++i;  // a stuffed period
      if (in[i] == '\r') {  // ".\r" + not LF: the period is content, the CR bare
        bare();
        o.out += '.';
      }
    }
    const char c = in[i];
    if (c == '\r') {
      if (i + 1 >= in.size()) break;  // need more to decide
      if (in[i + 1] == '\n') {
        o.out += "\r\n";
        i += 2;
        line_start = true;
        continue;
      }
      bare();
      o.out += '\r';
      ++i;
      line_start = false;
      continue;
    }
    if (c == '\n') bare();
    o.out += c;
    ++i;
    line_start = false;
  }
  o.size = o.out.size();
  return o;
}

TEST(DataDecoderTest, AgreesWithAByteAtATimeReference) {
  // Random messages over an alphabet rich in the bytes that matter, each
  // ended properly so that both sides finish; compared whole and byte by byte.
  std::uint32_t seed = 12345;
  auto next = [&seed] {
    seed = seed * 1103515245u + 12345u;
    return (seed >> 16) & 0x7fff;
  };
  static constexpr std::string_view kPieces[] = {"\r\n", "\r", "\n", ".", "..", "a", "bc", "\r\n.", "x\r\n"};
  for (int round = 0; round < 3000; ++round) {
    std::string in;
    const int length = static_cast<int>(next() % 24);
    for (int k = 0; k < length; ++k) in += kPieces[next() % std::size(kPieces)];
    in += "\r\n.\r\n";
    SCOPED_TRACE(testing::PrintToString(in));
    const Outcome expected = reference_decode(in);
    ASSERT_TRUE(expected.done);
    ASSERT_EQ(one_shot(in), expected);
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < in.size(); ++i) every.push_back(i);
    ASSERT_EQ(feed_pieces(in, every), expected);
  }
}

}  // namespace
}  // namespace mxgate::smtp
