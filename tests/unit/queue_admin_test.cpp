// Queue administration: list (text and JSON), delete (and its refusal of
// anything but a queue id), flush against no gateway, a stale pid file, a
// process of another name, and a real process named mxgate.
#include "queue/queue_admin.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "queue/spool.hpp"
#include "temp_dir.hpp"

extern char** environ;

namespace mxgate::queue {
namespace {

namespace fs = std::filesystem;
using Status = RecipientState::Status;

using test_support::TempDir;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A spool with two messages: 0AAA never tried, 0BBB tried twice.
class QueueAdmin : public ::testing::Test {
 protected:
  void SetUp() override {
    auto spool = Spool::open(dir_.path());
    ASSERT_TRUE(spool) << spool.error();
    Envelope a;
    a.id = "0AAA";
    a.sender = "alice@example.org";
    a.recipients = {"bob@example.com"};
    a.received_unix = 1739440800;                                 // 2025-02-13 10:00:00 UTC
    ASSERT_TRUE(spool->store(a, "Subject: a\r\n\r\nhello\r\n"));  // 21 bytes
    Envelope b;
    b.id = "0BBB";
    b.sender = "";
    b.recipients = {"carol@example.net", "dave@example.com"};
    b.received_unix = 1739444400;  // 11:00:00
    ASSERT_TRUE(spool->store(b, std::string(100, 'x')));
    DeliveryState s = fresh_state(b);
    s.attempts = 2;
    s.first_attempt_unix = 1739444401;
    s.next_attempt_unix = 1739445001;
    s.last_error = "4.4.1 connection refused by mx.example.net:25";
    s.recipients[0].last_reply = "451 4.3.0 \"busy\" \x1b[2J\\ try later";
    s.recipients[1].status = Status::delivered;
    s.recipients[1].last_reply = "250 2.0.0 Ok";
    ASSERT_TRUE(save_state(dir_.path(), s));
  }

  const fs::path& spool() const { return dir_.path(); }

  TempDir dir_;
};

TEST_F(QueueAdmin, PidFileIsInTheSpool) {
  EXPECT_EQ(pid_file("/var/spool/mxgate"), fs::path("/var/spool/mxgate/mxgate.pid"));
}

TEST_F(QueueAdmin, ListsAsText) {
  auto text = queue_list(spool(), false);
  ASSERT_TRUE(text) << text.error();
  EXPECT_EQ(*text,
            "0AAA  21 bytes  arrived 2025-02-13 10:00:00 UTC\n"
            "  from <alice@example.org>\n"
            "  attempts 0, next now\n"
            "  pending    <bob@example.com>\n"
            "\n"
            "0BBB  100 bytes  arrived 2025-02-13 11:00:00 UTC\n"
            "  from <>\n"
            "  attempts 2, first 2025-02-13 11:00:01 UTC, next 2025-02-13 11:10:01 UTC\n"
            "  last error: 4.4.1 connection refused by mx.example.net:25\n"
            "  pending    <carol@example.net>  451 4.3.0 \"busy\" ?[2J\\ try later\n"
            "  delivered  <dave@example.com>  250 2.0.0 Ok\n"
            "\n"
            "-- 2 messages, 121 bytes\n");
}

TEST_F(QueueAdmin, ListsAsJson) {
  auto json = queue_list(spool(), true);
  ASSERT_TRUE(json) << json.error();
  EXPECT_EQ(
      *json,
      "[\n"
      "  {\"id\": \"0AAA\", \"arrival\": \"2025-02-13T10:00:00Z\", \"arrival_unix\": 1739440800, "
      "\"size\": 21, \"sender\": \"alice@example.org\", \"attempts\": 0, \"first_attempt_unix\": 0, "
      "\"next_attempt_unix\": 0, \"last_error\": \"\", \"recipients\": [{\"address\": \"bob@example.com\", "
      "\"status\": \"pending\", \"last_reply\": \"\"}]},\n"
      "  {\"id\": \"0BBB\", \"arrival\": \"2025-02-13T11:00:00Z\", \"arrival_unix\": 1739444400, "
      "\"size\": 100, \"sender\": \"\", \"attempts\": 2, \"first_attempt_unix\": 1739444401, "
      "\"next_attempt_unix\": 1739445001, \"last_error\": \"4.4.1 connection refused by mx.example.net:25\", "
      "\"recipients\": [{\"address\": \"carol@example.net\", \"status\": \"pending\", "
      "\"last_reply\": \"451 4.3.0 \\\"busy\\\" \\u001b[2J\\\\ try later\"}, "
      "{\"address\": \"dave@example.com\", \"status\": \"delivered\", \"last_reply\": \"250 2.0.0 Ok\"}]}\n"
      "]\n");
}

TEST(QueueAdminEmpty, EmptyQueue) {
  TempDir dir;
  ASSERT_TRUE(Spool::open(dir.path()));
  auto text = queue_list(dir.path(), false);
  ASSERT_TRUE(text) << text.error();
  EXPECT_EQ(*text, "Mail queue is empty\n");
  auto json = queue_list(dir.path(), true);
  ASSERT_TRUE(json) << json.error();
  EXPECT_EQ(*json, "[]\n");
}

TEST(QueueAdminEmpty, NoSpoolIsAnError) {
  TempDir dir;
  auto text = queue_list(dir.path() / "nowhere", false);
  ASSERT_FALSE(text);
  EXPECT_NE(text.error().find("nowhere"), std::string::npos) << text.error();
}

TEST_F(QueueAdmin, CorruptMessageAndStateAreShownNotFatal) {
  write_file(spool() / "queue" / "0CCC", "not a spool file\n");
  write_file(spool() / "state" / "0AAA", "MXGATE-STATE 1\ntruncated");
  auto entries = queue_entries(spool());
  ASSERT_TRUE(entries) << entries.error();
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].id, "0AAA");
  EXPECT_NE((*entries)[0].state_error.find("corrupt"), std::string::npos);
  EXPECT_EQ((*entries)[0].state.recipients.size(), 1u);
  EXPECT_EQ((*entries)[2].id, "0CCC");
  EXPECT_NE((*entries)[2].error.find("corrupt"), std::string::npos);

  auto text = queue_list(spool(), false);
  ASSERT_TRUE(text) << text.error();
  EXPECT_NE(text->find("0CCC  (unreadable: spool: 0CCC: corrupt: not a spool file)"), std::string::npos)
      << *text;
  EXPECT_NE(text->find("  state file unusable: state: 0AAA: corrupt"), std::string::npos) << *text;
  auto json = queue_list(spool(), true);
  ASSERT_TRUE(json) << json.error();
  EXPECT_NE(json->find("{\"id\": \"0CCC\", \"error\": \"spool: 0CCC: corrupt: not a spool file\"}"),
            std::string::npos)
      << *json;
  EXPECT_NE(json->find("\"state_error\": \"state: 0AAA: corrupt"), std::string::npos) << *json;
}

TEST_F(QueueAdmin, IgnoresFilesThatAreNotQueueIds) {
  write_file(spool() / "queue" / ".hidden", "x");
  write_file(spool() / "queue" / "lower", "x");
  auto entries = queue_entries(spool());
  ASSERT_TRUE(entries) << entries.error();
  EXPECT_EQ(entries->size(), 2u);
}

TEST_F(QueueAdmin, DeleteRemovesMessageAndState) {
  ASSERT_TRUE(queue_delete(spool(), "0BBB"));
  EXPECT_FALSE(fs::exists(spool() / "queue" / "0BBB"));
  EXPECT_FALSE(fs::exists(spool() / "state" / "0BBB"));
  EXPECT_TRUE(fs::exists(spool() / "queue" / "0AAA"));
  auto entries = queue_entries(spool());
  ASSERT_TRUE(entries);
  EXPECT_EQ(entries->size(), 1u);
}

TEST_F(QueueAdmin, DeleteOfAMessageWithoutState) {
  ASSERT_TRUE(queue_delete(spool(), "0AAA"));
  EXPECT_FALSE(fs::exists(spool() / "queue" / "0AAA"));
}

TEST_F(QueueAdmin, DeleteOfAnUnknownIdIsAnError) {
  auto deleted = queue_delete(spool(), "0ZZZ");
  ASSERT_FALSE(deleted);
  EXPECT_NE(deleted.error().find("no such message"), std::string::npos) << deleted.error();
}

TEST_F(QueueAdmin, DeleteRemovesAnOrphanState) {
  DeliveryState orphan;
  orphan.id = "0DDD";
  orphan.recipients = {{"x@example.com", Status::pending, ""}};
  ASSERT_TRUE(save_state(spool(), orphan));
  EXPECT_TRUE(queue_delete(spool(), "0DDD"));
  EXPECT_FALSE(fs::exists(spool() / "state" / "0DDD"));
}

TEST_F(QueueAdmin, DeleteRefusesAnythingButAQueueId) {
  write_file(spool() / "victim", "keep");
  write_file(spool() / "queue" / "lower", "keep");
  for (const std::string& id :
       std::vector<std::string>{"", "../victim", "..", ".", "lower", "0AAA/../0BBB", "0AAA ", " 0AAA",
                                "/etc/passwd", "0AAA\n", std::string(65, 'A')}) {
    auto deleted = queue_delete(spool(), id);
    ASSERT_FALSE(deleted) << id;
    EXPECT_NE(deleted.error().find("invalid queue id"), std::string::npos) << deleted.error();
  }
  EXPECT_EQ(read_file(spool() / "victim"), "keep");
  EXPECT_EQ(read_file(spool() / "queue" / "lower"), "keep");
  EXPECT_TRUE(fs::exists(spool() / "queue" / "0AAA"));
  EXPECT_TRUE(fs::exists(spool() / "queue" / "0BBB"));
}

TEST_F(QueueAdmin, FlushWithoutGatewayMakesEverythingDueNow) {
  auto flushed = queue_flush(spool());
  ASSERT_TRUE(flushed) << flushed.error();
  EXPECT_EQ(*flushed, "not running: queued mail will be tried at next start");
  auto state = read_state(spool(), "0BBB");
  ASSERT_TRUE(state && state->has_value());
  EXPECT_EQ((*state)->next_attempt_unix, 0);
  EXPECT_EQ((*state)->attempts, 2u) << "only the schedule changes";
  EXPECT_EQ((*state)->recipients[1].status, Status::delivered);
  EXPECT_FALSE(fs::exists(spool() / "state" / "0AAA")) << "no state is created";
}

TEST_F(QueueAdmin, FlushWithoutStateDirectory) {
  TempDir dir;
  ASSERT_TRUE(Spool::open(dir.path()));
  auto flushed = queue_flush(dir.path());
  ASSERT_TRUE(flushed) << flushed.error();
  EXPECT_EQ(*flushed, "not running: queued mail will be tried at next start");
}

TEST_F(QueueAdmin, FlushReportsACorruptStateButUpdatesTheOthers) {
  write_file(spool() / "state" / "0AAA", "garbage");
  auto flushed = queue_flush(spool());
  ASSERT_FALSE(flushed);
  EXPECT_NE(flushed.error().find("1 state file(s)"), std::string::npos) << flushed.error();
  auto state = read_state(spool(), "0BBB");
  ASSERT_TRUE(state && state->has_value());
  EXPECT_EQ((*state)->next_attempt_unix, 0);
}

TEST_F(QueueAdmin, FlushNeverSignalsAProcessOfAnotherName) {
  // This test process is "unit_tests": SIGUSR1 would kill it.
  write_file(pid_file(spool()), std::to_string(::getpid()) + "\n");
  auto flushed = queue_flush(spool());
  ASSERT_TRUE(flushed) << flushed.error();
  EXPECT_EQ(*flushed, "not running: queued mail will be tried at next start");
}

TEST_F(QueueAdmin, FlushTreatsABadPidFileAsNotRunning) {
  for (const std::string content :
       {"", "0", "1", "-1", "-4242", "abc", "12x", "99999999999999", "4194305\n", " 12"}) {
    write_file(pid_file(spool()), content);
    auto flushed = queue_flush(spool());
    ASSERT_TRUE(flushed) << content << ": " << flushed.error();
    EXPECT_EQ(*flushed, "not running: queued mail will be tried at next start") << content;
  }
}

// A real process whose name is "mxgate": sleep(1) started through a symlink
// of that name.  Killed and reaped however the test ends.
class FakeGateway {
 public:
  explicit FakeGateway(const fs::path& dir) {
    const fs::path sleep = fs::exists("/usr/bin/sleep") ? "/usr/bin/sleep" : "/bin/sleep";
    link_ = dir / "mxgate";
    fs::create_symlink(sleep, link_);
    std::string arg0 = "mxgate", arg1 = "30";
    char* argv[] = {arg0.data(), arg1.data(), nullptr};
    if (::posix_spawn(&pid_, link_.c_str(), nullptr, nullptr, argv, environ) != 0) pid_ = -1;
  }
  ~FakeGateway() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  FakeGateway(const FakeGateway&) = delete;
  FakeGateway& operator=(const FakeGateway&) = delete;

  pid_t pid() const { return pid_; }
  // The signal that ended it, or 0.
  int wait_for_signal() {
    int status = 0;
    if (::waitpid(pid_, &status, 0) != pid_) return 0;
    reaped_ = true;
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  }

 private:
  fs::path link_;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

TEST_F(QueueAdmin, FlushSignalsARunningGateway) {
  TempDir bin;
  FakeGateway gateway(bin.path());
  ASSERT_GT(gateway.pid(), 0);
  ASSERT_EQ(read_file(fs::path("/proc") / std::to_string(gateway.pid()) / "comm"), "mxgate\n");
  write_file(pid_file(spool()), std::to_string(gateway.pid()) + "\n");

  auto flushed = queue_flush(spool());
  ASSERT_TRUE(flushed) << flushed.error();
  EXPECT_EQ(*flushed, "flush requested");
  EXPECT_EQ(gateway.wait_for_signal(), SIGUSR1);
  auto state = read_state(spool(), "0BBB");
  ASSERT_TRUE(state && state->has_value());
  EXPECT_EQ((*state)->next_attempt_unix, 1739445001) << "the running gateway owns the state";
}

TEST_F(QueueAdmin, FlushAfterTheGatewayExitedIsNotRunning) {
  TempDir bin;
  FakeGateway gateway(bin.path());
  ASSERT_GT(gateway.pid(), 0);
  write_file(pid_file(spool()), std::to_string(gateway.pid()));
  ::kill(gateway.pid(), SIGKILL);
  EXPECT_EQ(gateway.wait_for_signal(), SIGKILL);
  auto flushed = queue_flush(spool());
  ASSERT_TRUE(flushed) << flushed.error();
  EXPECT_EQ(*flushed, "not running: queued mail will be tried at next start");
}

TEST(QueueAdminJson, StringEscaping) {
  EXPECT_EQ(json_string(""), "\"\"");
  EXPECT_EQ(json_string("plain"), "\"plain\"");
  EXPECT_EQ(json_string("q\"b\\s/"), "\"q\\\"b\\\\s/\"");
  EXPECT_EQ(json_string("\n\r\t\b\f"), "\"\\n\\r\\t\\u0008\\u000c\"");
  EXPECT_EQ(json_string(std::string("nul\0x", 5)), "\"nul\\u0000x\"");
  EXPECT_EQ(json_string("\x1b\x7f"), "\"\\u001b\\u007f\"");
  EXPECT_EQ(json_string("\xc2\x9b"), "\"\\u009b\"");             // C1 control
  EXPECT_EQ(json_string("jürgen 用户 😀"), "\"jürgen 用户 😀\"");  // valid UTF-8 kept
  EXPECT_EQ(json_string("\xff\xfe"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(json_string("\xc3"), "\"\\ufffd\"");                                   // truncated sequence
  EXPECT_EQ(json_string("\xc0\xaf"), "\"\\ufffd\\ufffd\"");                        // overlong
  EXPECT_EQ(json_string("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");             // surrogate
  EXPECT_EQ(json_string("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");  // above U+10FFFF
}

}  // namespace
}  // namespace mxgate::queue
