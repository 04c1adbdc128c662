// Reply formatting (src/smtp/reply.hpp): exact bytes on the wire.
#include "smtp/reply.hpp"

#include <gtest/gtest.h>

namespace mxgate::smtp {
namespace {

TEST(ReplyTest, SingleLineWithEnhancedCode) {
  std::string out;
  append_reply(out, Reply{250, "2.1.0", "Ok"});
  EXPECT_EQ(out, "250 2.1.0 Ok\r\n");
}

TEST(ReplyTest, SingleLineWithoutEnhancedCode) {
  std::string out;
  append_reply(out, Reply{220, {}, "mx.example.test ESMTP mxgate"});
  EXPECT_EQ(out, "220 mx.example.test ESMTP mxgate\r\n");
}

TEST(ReplyTest, AppendsToExistingOutput) {
  std::string out = "250 2.1.0 Ok\r\n";
  append_reply(out, Reply{354, {}, "End data with <CR><LF>.<CR><LF>"});
  append_reply(out, Reply{452, "4.5.3", "Too many recipients"});
  EXPECT_EQ(out,
            "250 2.1.0 Ok\r\n"
            "354 End data with <CR><LF>.<CR><LF>\r\n"
            "452 4.5.3 Too many recipients\r\n");
}

TEST(ReplyTest, EmptyTextStillEndsInCrlf) {
  std::string out;
  append_reply(out, Reply{250, "2.0.0", ""});
  EXPECT_EQ(out, "250 2.0.0 \r\n");
}

TEST(ReplyTest, MultilineUsesDashOnAllButLast) {
  std::string out;
  append_multiline(out, 250, {"mx.example.test", "PIPELINING", "CHUNKING"});
  EXPECT_EQ(out,
            "250-mx.example.test\r\n"
            "250-PIPELINING\r\n"
            "250 CHUNKING\r\n");
}

TEST(ReplyTest, MultilineWithOneLineIsASingleLine) {
  std::string out;
  append_multiline(out, 250, {"mx.example.test"});
  EXPECT_EQ(out, "250 mx.example.test\r\n");
}

TEST(ReplyTest, MultilineWithNoLinesAppendsNothing) {
  std::string out = "x";
  append_multiline(out, 250, {});
  EXPECT_EQ(out, "x");
}

TEST(ReplyTest, MultilineAppends) {
  std::string out = "220 2.0.0 Ready\r\n";
  append_multiline(out, 421, {"a", "b"});
  EXPECT_EQ(out, "220 2.0.0 Ready\r\n421-a\r\n421 b\r\n");
}

}  // namespace
}  // namespace mxgate::smtp
