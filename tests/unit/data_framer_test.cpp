// DATA framing (src/delivery/data_framer.hpp): dot-stuffing, line-end
// repair, and the piecewise framer checked against a byte-at-a-time
// reference and the server's own decoder.
#include "delivery/data_framer.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "smtp/message_framing.hpp"

namespace mxgate::delivery {
namespace {

TEST(DataFraming, DotStuffing) {
  EXPECT_EQ(frame_data(""), ".\r\n");
  EXPECT_EQ(frame_data("a\r\n"), "a\r\n.\r\n");
  EXPECT_EQ(frame_data(".\r\n"), "..\r\n.\r\n");
  EXPECT_EQ(frame_data(".a\r\n.\r\n..\r\nb.\r\n. \r\n"), "..a\r\n..\r\n...\r\nb.\r\n.. \r\n.\r\n");
  EXPECT_EQ(frame_data("x\r\n.\r\ny\r\n"), "x\r\n..\r\ny\r\n.\r\n");
  EXPECT_EQ(frame_data("a.b\r\n"), "a.b\r\n.\r\n");
}

TEST(DataFraming, MissingFinalLineEndIsAdded) {
  EXPECT_EQ(frame_data("abc"), "abc\r\n.\r\n");
  EXPECT_EQ(frame_data("."), "..\r\n.\r\n");
  EXPECT_EQ(frame_data("a\r\n."), "a\r\n..\r\n.\r\n");
}

TEST(DataFraming, BareCrAndLfBecomeCrlf) {
  EXPECT_EQ(frame_data("a\n.\nb\n"), "a\r\n..\r\nb\r\n.\r\n");
  EXPECT_EQ(frame_data("a\r.\rb"), "a\r\n..\r\nb\r\n.\r\n");
  EXPECT_EQ(frame_data("a\n\r.\r\n"), "a\r\n\r\n..\r\n.\r\n");
  EXPECT_EQ(frame_data("\r\n.\r\n"), "\r\n..\r\n.\r\n");
}

TEST(DataFraming, RoundTripsThroughTheServerDecoder) {
  const std::vector<std::string> contents = {"",
                                             "\r\n",
                                             ".\r\n",
                                             "..\r\n",
                                             "Subject: x\r\n\r\n.\r\n..\r\n...\r\n.x\r\n",
                                             std::string(5000, '.') + "\r\n",
                                             "a\r\n\r\n.\r\n\r\n.\r\n",
                                             "line\r\n.\r\n.\r\n.\r\n"};
  for (const auto& content : contents) {
    const std::string wire = frame_data(content);
    smtp::DataDecoder decoder;
    std::string out;
    const auto progress = decoder.feed(wire, &out);
    EXPECT_TRUE(progress.done) << testing::PrintToString(content);
    EXPECT_EQ(progress.consumed, wire.size())
        << "the end marker is the last thing: " << testing::PrintToString(content);
    EXPECT_FALSE(decoder.bare_newline());
    EXPECT_EQ(out, content) << testing::PrintToString(wire);
  }
}

// RFC 5321 4.5.2 stated one byte at a time: the slow, obvious version.
std::string reference_frame(std::string_view content) {
  std::string out;
  bool line_start = true;
  for (std::size_t i = 0; i < content.size(); ++i) {
    const char c = content[i];
    if (c == '\r' || c == '\n') {
      out += "\r\n";
      if (c == '\r' && i + 1 < content.size() && content[i + 1] == '\n') ++i;
      line_start = true;
      continue;
    }
    if (line_start && c == '.') out += '.';
    out += c;
    line_start = false;
  }
  if (!line_start) out += "\r\n";
  return out + ".\r\n";
}

std::string framed_in_pieces(std::string_view content, std::size_t max, std::size_t* pieces = nullptr) {
  DataFramer framer(content);
  std::string out;
  std::size_t n = 0;
  for (std::string_view piece = framer.next(max); !piece.empty(); piece = framer.next(max)) {
    out.append(piece);
    ++n;
  }
  EXPECT_TRUE(framer.done());
  EXPECT_EQ(framer.next(max), "") << "nothing after the end marker";
  if (pieces) *pieces = n;
  return out;
}

TEST(DataFraming, PiecesOfAnySizeMatchTheReference) {
  std::mt19937 rng(4);  // fixed seed: a failure reproduces
  const char alphabet[] = {'a', '.', '\r', '\n', ' '};
  for (int round = 0; round < 3000; ++round) {
    std::string content(rng() % 40, 'x');
    for (char& c : content) c = alphabet[rng() % sizeof alphabet];
    const std::string want = reference_frame(content);
    for (const std::size_t max : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7}, std::size_t{64}}) {
      EXPECT_EQ(framed_in_pieces(content, max), want)
          << testing::PrintToString(content) << " in pieces of " << max;
    }
  }
}

TEST(DataFraming, CrlfSplitAtAPieceBoundaryStaysOneLineEnd) {
  // "ab\r" | "\n.x": a CR at the end of one piece and its LF at the start of
  // the next must not become two line ends, nor hide the dot from stuffing.
  for (std::size_t max = 1; max <= 6; ++max) {
    EXPECT_EQ(framed_in_pieces("ab\r\n.x\r\n", max), "ab\r\n..x\r\n.\r\n") << max;
  }
}

TEST(DataFraming, CleanContentIsHandedOutWithoutCopies) {
  std::string content;
  for (int i = 0; i < 2000; ++i) content += "Line " + std::to_string(i) + " of a clean message\r\n";
  DataFramer framer(content);
  std::size_t total = 0;
  for (;;) {
    const std::string_view piece = framer.next(4096);
    if (framer.done()) {
      EXPECT_EQ(piece, ".\r\n");
      break;
    }
    EXPECT_LE(piece.size(), 4096u);
    // A view into content itself, not a copy of it.
    EXPECT_GE(piece.data(), content.data());
    EXPECT_LE(piece.data() + piece.size(), content.data() + content.size());
    total += piece.size();
  }
  EXPECT_EQ(total, content.size());
}

TEST(DataFraming, LfOnlyContentIsFramedInBoundedPieces) {
  std::string content;
  for (int i = 0; i < 1000; ++i) content += "line\n";
  std::size_t pieces = 0;
  EXPECT_EQ(framed_in_pieces(content, 1024, &pieces), reference_frame(content));
  // Not one write per line: the slow path fills its pieces too.
  EXPECT_LE(pieces, 10u);
}

}  // namespace
}  // namespace mxgate::delivery
