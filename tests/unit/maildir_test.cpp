// Maildir delivery and the scheduler's local path, on real directories.
#include "delivery/maildir.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "delivery/scheduler.hpp"
#include "temp_dir.hpp"

namespace mxgate::delivery {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using test_support::TempDir;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    files.push_back(it->path());
  }
  return files;
}

queue::SpooledMessage sample_message(std::string id) {
  queue::SpooledMessage m;
  m.envelope.id = std::move(id);
  m.envelope.sender = "sender@example.test";
  m.envelope.recipients = {"one@example.test", "d\xC3\xA9j\xC3\xA0@exampl\xC3\xA9.test"};
  m.envelope.received_unix = 1700000000;
  m.content = "Received: from x\r\nSubject: hi\r\n\r\nline 1\r\nbare\rcr\r\nlast\r\n";
  return m;
}

bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

TEST(MaildirTest, OpenCreatesTheThreeDirectories) {
  TempDir dir;
  auto maildir = Maildir::open(dir.path() / "Maildir");
  ASSERT_TRUE(maildir) << maildir.error();
  for (const char* sub : {"tmp", "new", "cur"}) {
    EXPECT_TRUE(fs::is_directory(dir.path() / "Maildir" / sub)) << sub;
  }
  EXPECT_EQ(maildir->directory(), dir.path() / "Maildir");
}

TEST(MaildirTest, DeliversWithHeadersAndLfLineEnds) {
  TempDir dir;
  auto maildir = Maildir::open(dir.path());
  ASSERT_TRUE(maildir) << maildir.error();
  auto name = maildir->deliver(sample_message("0ABC"));
  ASSERT_TRUE(name) << name.error();

  EXPECT_TRUE(std::regex_match(*name, std::regex(R"(\d+\.M\d{1,6}P\d+Q0ABC\.[^/:]+)"))) << *name;
  EXPECT_TRUE(files_in(dir.path() / "tmp").empty());
  ASSERT_EQ(files_in(dir.path() / "new").size(), 1u);
  EXPECT_EQ(read_file(dir.path() / "new" / *name),
            "Return-Path: <sender@example.test>\n"
            "Delivered-To: one@example.test\n"
            "Delivered-To: d\xC3\xA9j\xC3\xA0@exampl\xC3\xA9.test\n"
            "Received: from x\nSubject: hi\n\nline 1\nbare\rcr\nlast\n");
}

TEST(MaildirTest, NullSenderAndLargeContent) {
  TempDir dir;
  auto maildir = Maildir::open(dir.path());
  ASSERT_TRUE(maildir) << maildir.error();
  queue::SpooledMessage m = sample_message("BIG");
  m.envelope.sender = "";
  m.envelope.recipients = {"r@example.test"};
  // CRLF pairs straddling every 64 KiB chunk boundary of the writer.
  m.content.clear();
  std::string expected = "Return-Path: <>\nDelivered-To: r@example.test\n";
  for (int i = 0; i < 100000; ++i) {
    m.content += "abcdefg\r\n";
    expected += "abcdefg\n";
  }
  auto name = maildir->deliver(m);
  ASSERT_TRUE(name) << name.error();
  EXPECT_EQ(read_file(dir.path() / "new" / *name), expected);
}

TEST(MaildirTest, TwoDeliveriesOfOneMessageGetDistinctNames) {
  TempDir dir;
  auto maildir = Maildir::open(dir.path());
  ASSERT_TRUE(maildir) << maildir.error();
  auto a = maildir->deliver(sample_message("SAME"));
  auto b = maildir->deliver(sample_message("SAME"));
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);
  EXPECT_EQ(files_in(dir.path() / "new").size(), 2u);
}

TEST(MaildirTest, RefusesHeaderInjection) {
  TempDir dir;
  auto maildir = Maildir::open(dir.path());
  ASSERT_TRUE(maildir) << maildir.error();
  auto m = sample_message("X");
  m.envelope.sender = "a\nX-Evil: 1";
  auto result = maildir->deliver(m);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error(), "maildir: sender contains CR or LF");
  m = sample_message("X");
  m.envelope.recipients = {"a\r\nX-Evil: 1"};
  EXPECT_FALSE(maildir->deliver(m));
  EXPECT_TRUE(files_in(dir.path() / "new").empty());
}

TEST(MaildirTest, FailureLeavesNothingBehind) {
  TempDir dir;
  auto maildir = Maildir::open(dir.path());
  ASSERT_TRUE(maildir) << maildir.error();
  fs::remove(dir.path() / "new");
  std::ofstream(dir.path() / "new") << "not a directory";
  auto result = maildir->deliver(sample_message("F1"));
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().rfind("maildir: rename to ", 0), 0u) << result.error();
  EXPECT_NE(result.error().find("Not a directory"), std::string::npos) << result.error();
  EXPECT_TRUE(files_in(dir.path() / "tmp").empty());
}

// The scheduler's local path: spooled messages into the Maildir.
class SchedulerMaildirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = queue::Spool::open(dir.path() / "spool");
    ASSERT_TRUE(s) << s.error();
    spool.emplace(std::move(*s));
    auto m = Maildir::open(dir.path() / "Maildir");
    ASSERT_TRUE(m) << m.error();
    config.hostname = "mx.example.test";
    config.spool = dir.path() / "spool";
    config.delivery.maildir = dir.path() / "Maildir";
    config.dns.trust_anchor_files.clear();  // no DNS on this path
    config.queue.retry_initial = std::chrono::seconds(1);
    config.queue.retry_max = std::chrono::seconds(1);
  }

  std::unique_ptr<Scheduler> make() {
    auto scheduler = Scheduler::create(config, *spool);
    EXPECT_TRUE(scheduler) << scheduler.error();
    return scheduler ? std::move(scheduler.value()) : nullptr;
  }

  std::string store(const std::string& content) {
    queue::Envelope e;
    e.id = queue::new_queue_id();
    e.sender = "s@example.test";
    e.recipients = {"r@example.test"};
    e.received_unix = static_cast<std::int64_t>(std::time(nullptr));
    auto stored = spool->store(e, content);
    EXPECT_TRUE(stored) << stored.error();
    return e.id;
  }

  fs::path new_dir() const { return dir.path() / "Maildir" / "new"; }

  TempDir dir;
  config::Config config;
  std::optional<queue::Spool> spool;
};

TEST_F(SchedulerMaildirTest, DeliversWhatIsSpooledAtStartAndRemovesIt) {
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(store("Subject: " + std::to_string(i) + "\r\n\r\nx\r\n"));

  testing::internal::CaptureStderr();
  auto scheduler = make();
  ASSERT_TRUE(scheduler);
  scheduler->start();
  const bool done = wait_for([&] { return files_in(new_dir()).size() == 3 && spool->list().empty(); });
  scheduler->stop();
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(done) << log;

  const auto delivered = files_in(new_dir());
  for (const auto& id : ids) {
    const auto it = std::find_if(delivered.begin(), delivered.end(), [&](const fs::path& p) {
      return p.filename().string().find("Q" + id + ".") != std::string::npos;
    });
    ASSERT_NE(it, delivered.end()) << id;
    EXPECT_NE(log.find("delivery: " + id + ": to=maildir nrcpt=1 status=sent (" + it->filename().string() + ")"),
              std::string::npos)
        << log;
  }
  EXPECT_FALSE(fs::exists(dir.path() / "spool" / "state" / ids[0]));
}

TEST_F(SchedulerMaildirTest, DeliversEnqueuedMessages) {
  testing::internal::CaptureStderr();
  auto scheduler = make();
  ASSERT_TRUE(scheduler);
  scheduler->start();
  const std::string id = store("Subject: later\r\n\r\nbody\r\n");
  scheduler->enqueue(id);
  scheduler->enqueue(id);  // a duplicate is harmless
  const bool done = wait_for([&] { return files_in(new_dir()).size() == 1 && spool->list().empty(); });
  std::this_thread::sleep_for(100ms);
  scheduler->stop();
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(done) << log;
  ASSERT_EQ(files_in(new_dir()).size(), 1u);
  EXPECT_EQ(read_file(files_in(new_dir())[0]),
            "Return-Path: <s@example.test>\nDelivered-To: r@example.test\nSubject: later\n\nbody\n");
}

TEST_F(SchedulerMaildirTest, DefersWhileTheMaildirIsBrokenThenRetries) {
  const std::string id = store("Subject: retry\r\n\r\n");
  testing::internal::CaptureStderr();
  auto scheduler = make();
  ASSERT_TRUE(scheduler);
  fs::remove(new_dir());
  std::ofstream(new_dir()) << "not a directory";
  scheduler->start();
  // The first attempt fails and keeps the message, with its state saved.
  ASSERT_TRUE(wait_for([&] { return fs::exists(dir.path() / "spool" / "state" / id); }));
  EXPECT_EQ(spool->list(), std::vector<std::string>{id});

  fs::remove(new_dir());
  fs::create_directory(new_dir());
  // The queue file and then the state file are unlinked (one disk job on
  // another thread): wait for both, not for the first alone.
  const bool done = wait_for([&] {
    return files_in(new_dir()).size() == 1 && spool->list().empty() &&
           !fs::exists(dir.path() / "spool" / "state" / id);
  });
  scheduler->stop();
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(done) << log;
  EXPECT_NE(log.find("delivery: " + id + ": to=maildir nrcpt=1 status=deferred (maildir: rename to "),
            std::string::npos)
      << log;
  EXPECT_FALSE(fs::exists(dir.path() / "spool" / "state" / id));
}

TEST_F(SchedulerMaildirTest, MovesCorruptFilesAside) {
  std::ofstream(dir.path() / "spool" / "queue" / "0BAD") << "MXGATE-SPOOL 1\nid 0BAD\n";
  store("Subject: fine\r\n\r\n");

  testing::internal::CaptureStderr();
  auto scheduler = make();
  ASSERT_TRUE(scheduler);
  scheduler->start();
  const bool done = wait_for([&] { return files_in(new_dir()).size() == 1 && spool->list().empty(); });
  scheduler->stop();
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(done) << log;
  EXPECT_TRUE(fs::exists(dir.path() / "spool" / "corrupt" / "0BAD"));
  EXPECT_NE(log.find("delivery: 0BAD: spool: 0BAD: corrupt: truncated header; moved to "), std::string::npos)
      << log;
}

TEST_F(SchedulerMaildirTest, StopIsPromptAndIdempotent) {
  store("Subject: stuck\r\n\r\n");
  config.queue.retry_initial = std::chrono::hours(1);
  config.queue.retry_max = std::chrono::hours(1);
  testing::internal::CaptureStderr();
  auto scheduler = make();
  ASSERT_TRUE(scheduler);
  fs::remove(new_dir());
  std::ofstream(new_dir()) << "not a directory";
  scheduler->start();
  scheduler->start();  // no effect
  ASSERT_TRUE(wait_for([&] { return fs::exists(dir.path() / "spool" / "state"); }));
  std::this_thread::sleep_for(50ms);  // now waiting out the one-hour retry delay
  const auto before = std::chrono::steady_clock::now();
  scheduler->stop();
  scheduler->stop();
  const auto took = std::chrono::steady_clock::now() - before;
  testing::internal::GetCapturedStderr();
  EXPECT_LT(took, 1s);
  EXPECT_EQ(spool->list().size(), 1u);  // undelivered messages stay spooled
}

TEST_F(SchedulerMaildirTest, DestructorStopsAnIdleScheduler) {
  const auto before = std::chrono::steady_clock::now();
  {
    auto scheduler = make();
    ASSERT_TRUE(scheduler);
    scheduler->start();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - before, 1s);
}

}  // namespace
}  // namespace mxgate::delivery
