// The tag action's subject tag.
#include "filter/subject_tag.hpp"

#include <gtest/gtest.h>

namespace mxgate::filter {
namespace {

TEST(SubjectTag, PutInFrontOfTheValue) {
  EXPECT_EQ(tag_subject("Received: x\r\nSubject: Hello\r\n\r\nbody\r\n", "[SPAM]"),
            "Received: x\r\nSubject: [SPAM] Hello\r\n\r\nbody\r\n");
  EXPECT_EQ(tag_subject("SUBJECT:Hello\r\n\r\n", "[SPAM]"), "SUBJECT: [SPAM] Hello\r\n\r\n");
  EXPECT_EQ(tag_subject("Subject:\r\n two lines\r\n\r\n", "[SPAM]"), "Subject: [SPAM]\r\n two lines\r\n\r\n");
  EXPECT_EQ(tag_subject("Subject: \r\n\r\n", "[SPAM]"), "Subject: [SPAM]\r\n\r\n");
}

TEST(SubjectTag, OnceOnlyAndOnlyTheFirstSubject) {
  EXPECT_EQ(tag_subject("Subject: [SPAM] Hello\r\n\r\n", "[SPAM]"), "Subject: [SPAM] Hello\r\n\r\n");
  EXPECT_EQ(tag_subject("Subject: a\r\nSubject: b\r\n\r\n", "[SPAM]"), "Subject: [SPAM] a\r\nSubject: b\r\n\r\n");
  EXPECT_EQ(tag_subject("X-Subject: a\r\n\r\nSubject: in the body\r\n", "[SPAM]"),
            "X-Subject: a\r\nSubject: [SPAM]\r\n\r\nSubject: in the body\r\n");
}

TEST(SubjectTag, AddedWhenMissingAndNothingWhenEmpty) {
  EXPECT_EQ(tag_subject("From: a@b.test\r\n\r\nbody\r\n", "[SPAM]"),
            "From: a@b.test\r\nSubject: [SPAM]\r\n\r\nbody\r\n");
  EXPECT_EQ(tag_subject("From: a@b.test\r\n", "[SPAM]"), "From: a@b.test\r\nSubject: [SPAM]\r\n");
  EXPECT_EQ(tag_subject("Subject: x\r\n\r\n", ""), "Subject: x\r\n\r\n");
}

}  // namespace
}  // namespace mxgate::filter
