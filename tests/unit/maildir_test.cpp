// Maildir delivery and the delivery runner, on real directories.
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

#include "delivery/delivery_runner.hpp"

namespace mxgate::delivery {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    static std::atomic<unsigned> counter{0};
    path_ = fs::temp_directory_path() /
            ("mxgate-maildir-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
             std::to_string(std::random_device{}()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

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

class DeliveryRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = queue::Spool::open(dir.path() / "spool");
    ASSERT_TRUE(s) << s.error();
    spool.emplace(std::move(*s));
    auto m = Maildir::open(dir.path() / "Maildir");
    ASSERT_TRUE(m) << m.error();
    maildir.emplace(std::move(*m));
  }

  std::string store(const std::string& content) {
    queue::Envelope e;
    e.id = queue::new_queue_id();
    e.sender = "s@example.test";
    e.recipients = {"r@example.test"};
    auto stored = spool->store(e, content);
    EXPECT_TRUE(stored) << stored.error();
    return e.id;
  }

  fs::path new_dir() const { return dir.path() / "Maildir" / "new"; }

  TempDir dir;
  std::optional<queue::Spool> spool;
  std::optional<Maildir> maildir;
};

TEST_F(DeliveryRunnerTest, DeliversWhatIsSpooledAtStartAndRemovesIt) {
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(store("Subject: " + std::to_string(i) + "\r\n\r\nx\r\n"));

  testing::internal::CaptureStderr();
  DeliveryRunner runner(*spool, *maildir);
  runner.start();
  const bool done = wait_for([&] { return runner.delivered() == 3; });
  runner.stop();
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(done) << log;

  EXPECT_TRUE(spool->list().empty());
  const auto delivered = files_in(new_dir());
  ASSERT_EQ(delivered.size(), 3u);
  for (const auto& id : ids) {
    const auto it = std::find_if(delivered.begin(), delivered.end(), [&](const fs::path& p) {
      return p.filename().string().find("Q" + id + ".") != std::string::npos;
    });
    ASSERT_NE(it, delivered.end()) << id;
    EXPECT_NE(log.find("delivery: " + id + ": delivered to maildir as " + it->filename().string() + "\n"),
              std::string::npos)
        << log;
  }
}

TEST_F(DeliveryRunnerTest, DeliversEnqueuedMessages) {
  testing::internal::CaptureStderr();
  DeliveryRunner runner(*spool, *maildir);
  runner.start();
  const std::string id = store("Subject: later\r\n\r\nbody\r\n");
  runner.enqueue(id);
  runner.enqueue(id);  // a duplicate is harmless
  const bool done = wait_for([&] { return runner.delivered() == 1 && spool->list().empty(); });
  runner.stop();
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(done) << log;
  ASSERT_EQ(files_in(new_dir()).size(), 1u);
  EXPECT_EQ(read_file(files_in(new_dir())[0]),
            "Return-Path: <s@example.test>\nDelivered-To: r@example.test\nSubject: later\n\nbody\n");
}

TEST_F(DeliveryRunnerTest, DefersWhileTheMaildirIsBrokenThenRetries) {
  const std::string id = store("Subject: retry\r\n\r\n");
  fs::remove(new_dir());
  std::ofstream(new_dir()) << "not a directory";

  testing::internal::CaptureStderr();
  DeliveryRunner runner(*spool, *maildir, 50ms);
  runner.start();
  // Give it time for a few attempts; every one must fail and keep the message.
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(runner.delivered(), 0u);
  EXPECT_EQ(spool->list(), std::vector<std::string>{id});

  fs::remove(new_dir());
  fs::create_directory(new_dir());
  const bool done = wait_for([&] { return runner.delivered() == 1; });
  runner.stop();
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(done) << log;
  EXPECT_TRUE(spool->list().empty());
  EXPECT_EQ(files_in(new_dir()).size(), 1u);
  EXPECT_NE(log.find("delivery: " + id + ": deferred: maildir: rename to "), std::string::npos) << log;
}

TEST_F(DeliveryRunnerTest, MovesCorruptFilesAside) {
  std::ofstream(dir.path() / "spool" / "queue" / "0BAD") << "MXGATE-SPOOL 1\nid 0BAD\n";
  const std::string good = store("Subject: fine\r\n\r\n");

  testing::internal::CaptureStderr();
  DeliveryRunner runner(*spool, *maildir);
  runner.start();
  const bool done = wait_for([&] { return runner.delivered() == 1; });
  runner.stop();
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(done) << log;
  EXPECT_TRUE(spool->list().empty());
  EXPECT_TRUE(fs::exists(dir.path() / "spool" / "corrupt" / "0BAD"));
  EXPECT_NE(log.find("delivery: 0BAD: spool: 0BAD: corrupt: truncated header; moved to "), std::string::npos)
      << log;
}

TEST_F(DeliveryRunnerTest, StopIsPromptAndIdempotent) {
  store("Subject: stuck\r\n\r\n");
  fs::remove(new_dir());
  std::ofstream(new_dir()) << "not a directory";

  testing::internal::CaptureStderr();
  DeliveryRunner runner(*spool, *maildir, 1h);
  runner.start();
  runner.start();  // no effect
  ASSERT_TRUE(wait_for([&] { return fs::is_regular_file(new_dir()); }));
  std::this_thread::sleep_for(50ms);  // now waiting out the one-hour retry delay
  const auto before = std::chrono::steady_clock::now();
  runner.stop();
  runner.stop();
  const auto took = std::chrono::steady_clock::now() - before;
  testing::internal::GetCapturedStderr();
  EXPECT_LT(took, 1s);
  EXPECT_EQ(spool->list().size(), 1u);  // undelivered messages stay spooled
}

TEST_F(DeliveryRunnerTest, DestructorStopsAnIdleRunner) {
  const auto before = std::chrono::steady_clock::now();
  {
    DeliveryRunner runner(*spool, *maildir);
    runner.start();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - before, 1s);
}

}  // namespace
}  // namespace mxgate::delivery
