// The quarantine's commands on a real spool directory: list, show, release
// into the queue, delete; hostile bytes never reach the terminal raw.
#include "queue/quarantine_admin.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "queue/spool.hpp"
#include "temp_dir.hpp"

namespace mxgate::queue {
namespace {

namespace fs = std::filesystem;

Envelope envelope(const std::string& id) {
  Envelope e;
  e.id = id;
  e.sender = "mallory@evil.test";
  e.recipients = {"alice@example.test", "bob@example.test"};
  e.client_address = "192.0.2.9";
  e.received_unix = 1764979200;  // 2025-12-06 00:00:00 UTC
  return e;
}

const std::string kContent =
    "Received: from x\r\n"
    "X-mxgate-Verdict: quarantine;\r\n\tspam=0.0;\r\n\tmalware=1.0;\r\n\trules=OFFICE_MACRO=1.0\r\n"
    "Subject: \x1b[31minvoice\r\n"
    "\r\n"
    "see attached\r\n";

class QuarantineAdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto held = Spool::open(quarantine_directory(dir_.path()));
    ASSERT_TRUE(held) << held.error();
    ASSERT_TRUE(held->store(envelope("00000AAA"), kContent));
    ASSERT_TRUE(held->store(envelope("00000BBB"), kContent));
    ASSERT_TRUE(Spool::open(dir_.path()));
  }
  test_support::TempDir dir_{"quarantine"};
};

TEST(QuarantineHeaderValue, UnfoldsAndMatchesCaseInsensitively) {
  EXPECT_EQ(header_value(kContent, "x-MXGATE-verdict"),
            "quarantine; spam=0.0; malware=1.0; rules=OFFICE_MACRO=1.0");
  EXPECT_EQ(header_value(kContent, "Subject"), "\x1b[31minvoice");
  EXPECT_EQ(header_value(kContent, "Missing"), "");
  // Only the header block counts.
  EXPECT_EQ(header_value("A: 1\r\n\r\nB: 2\r\n", "B"), "");
  EXPECT_EQ(header_value("A:\r\n \r\n\tx\r\n", "A"), "x");
  EXPECT_EQ(header_value("", "A"), "");
}

TEST_F(QuarantineAdminTest, ListShowsEveryHeldMessageWithItsVerdict) {
  auto text = quarantine_list(dir_.path(), false);
  ASSERT_TRUE(text) << text.error();
  EXPECT_NE(text->find("00000AAA  "), std::string::npos);
  EXPECT_NE(text->find("  from <mallory@evil.test>\n  to   <alice@example.test>\n"), std::string::npos);
  EXPECT_NE(text->find("  verdict: quarantine; spam=0.0; malware=1.0; rules=OFFICE_MACRO=1.0\n"), std::string::npos);
  EXPECT_NE(text->find("-- 2 messages, "), std::string::npos);
  auto json = quarantine_list(dir_.path(), true);
  ASSERT_TRUE(json);
  EXPECT_NE(json->find("\"id\": \"00000BBB\", \"arrival\": \"2025-12-06T00:00:00Z\""), std::string::npos);
  EXPECT_NE(json->find("\"recipients\": [\"alice@example.test\", \"bob@example.test\"]"), std::string::npos);
}

TEST_F(QuarantineAdminTest, ShowNeverPrintsControlCharacters) {
  auto text = quarantine_show(dir_.path(), "00000AAA", false);
  ASSERT_TRUE(text) << text.error();
  EXPECT_EQ(text->find('\x1b'), std::string::npos);
  EXPECT_EQ(text->find('\r'), std::string::npos);
  EXPECT_NE(text->find("Subject: ?[31minvoice\n"), std::string::npos);
  EXPECT_NE(text->find("\tspam=0.0;\n"), std::string::npos);  // tabs kept
  auto json = quarantine_show(dir_.path(), "00000AAA", true);
  ASSERT_TRUE(json);
  EXPECT_NE(json->find("\"content\": \"Received: from x\\r\\n"), std::string::npos);
  EXPECT_NE(json->find("\\u001b[31m"), std::string::npos);
}

TEST_F(QuarantineAdminTest, ReleaseMovesTheMessageIntoTheQueue) {
  auto released = quarantine_release(dir_.path(), "00000AAA");
  ASSERT_TRUE(released) << released.error();
  EXPECT_EQ(*released, "released 00000AAA: not running: it will be delivered at next start");
  EXPECT_FALSE(fs::exists(quarantine_directory(dir_.path()) / "queue" / "00000AAA"));
  auto spool = Spool::open(dir_.path());
  ASSERT_TRUE(spool);
  auto message = spool->load("00000AAA");
  ASSERT_TRUE(message) << message.error();
  EXPECT_EQ(message->content, kContent);
  EXPECT_EQ(message->envelope.recipients.size(), 2u);
  // Released once only.
  auto again = quarantine_release(dir_.path(), "00000AAA");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error(), "quarantine: no such message: 00000AAA");
}

TEST_F(QuarantineAdminTest, DeleteRemovesOnlyThatMessage) {
  ASSERT_TRUE(quarantine_delete(dir_.path(), "00000BBB"));
  auto entries = quarantine_entries(dir_.path());
  ASSERT_TRUE(entries);
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].id, "00000AAA");
  EXPECT_EQ(quarantine_delete(dir_.path(), "00000BBB").error(), "quarantine: no such message: 00000BBB");
}

TEST_F(QuarantineAdminTest, IdsThatCouldNamePathsAreRefused) {
  for (const char* id : {"../queue/00000AAA", "", "a", "00000AAA/", "."}) {
    EXPECT_EQ(quarantine_delete(dir_.path(), id).error(), "quarantine: invalid id (expected [0-9A-Z]+)") << id;
    EXPECT_FALSE(quarantine_release(dir_.path(), id)) << id;
    EXPECT_FALSE(quarantine_show(dir_.path(), id, false)) << id;
  }
}

TEST_F(QuarantineAdminTest, ACorruptFileIsListedAsUnreadableAndNeverReleased) {
  const fs::path bad = quarantine_directory(dir_.path()) / "queue" / "00000CCC";
  { std::FILE* f = std::fopen(bad.c_str(), "w"); std::fputs("garbage", f); std::fclose(f); }
  auto text = quarantine_list(dir_.path(), false);
  ASSERT_TRUE(text);
  EXPECT_NE(text->find("00000CCC  (unreadable: "), std::string::npos);
  EXPECT_FALSE(quarantine_release(dir_.path(), "00000CCC"));
  EXPECT_TRUE(fs::exists(bad));
  EXPECT_FALSE(fs::exists(dir_.path() / "queue" / "00000CCC"));
}

TEST(QuarantineAdminEmpty, NothingHeldYet) {
  test_support::TempDir dir("quarantine-empty");
  auto text = quarantine_list(dir.path(), false);
  ASSERT_TRUE(text) << text.error();
  EXPECT_EQ(*text, "Quarantine is empty\n");
  auto json = quarantine_list(dir.path(), true);
  ASSERT_TRUE(json);
  EXPECT_EQ(*json, "[]\n");
}

}  // namespace
}  // namespace mxgate::queue
