// The spool writer (group commit): every request gets its own result, what
// arrives while a batch commits forms the next batch, a failing file fails
// only its message and leaves nothing in queue/, a failing directory fsync
// fails its whole batch, and every file in queue/ decodes to what was sent.
#include "queue/spool_writer.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <optional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "temp_dir.hpp"

namespace mxgate::queue {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using test_support::TempDir;

std::string test_read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename().string());
  return names;
}

Envelope envelope_for(std::string id) {
  Envelope e;
  e.id = std::move(id);
  e.sender = "alice@example.org";
  e.recipients = {"bob@example.test", "carol@example.test"};
  e.client_address = "192.0.2.7";
  e.helo = "client.example.org";
  e.tls = "TLSv1.3 TLS_AES_256_GCM_SHA384";
  e.received_unix = 1700000000;
  return e;
}

// One message to store, with its own distinct content, and where its result lands.
struct Message {
  Envelope envelope;
  std::string content;
  std::promise<Result<void>> promise;
  std::future<Result<void>> future = promise.get_future();

  explicit Message(std::string id, std::size_t size = 300) : envelope(envelope_for(id)) {
    content = "Subject: " + id + "\r\n\r\n";
    while (content.size() < size) content += "line of " + id + "\r\n";
  }
  void submit(SpoolWriter& writer) {
    writer.submit(envelope, content, [this](Result<void> r) { promise.set_value(std::move(r)); });
  }
  Result<void> result() {
    EXPECT_EQ(future.wait_for(30s), std::future_status::ready) << envelope.id;
    return future.get();
  }
};

std::vector<std::unique_ptr<Message>> make_messages(std::size_t n, std::size_t size = 300) {
  std::vector<std::unique_ptr<Message>> messages;
  for (std::size_t i = 0; i < n; ++i) {
    messages.push_back(std::make_unique<Message>(new_queue_id(), size));
  }
  return messages;
}

void expect_stored(const Spool& spool, const Message& m) {
  auto loaded = spool.load(m.envelope.id);
  ASSERT_TRUE(loaded) << loaded.error();
  EXPECT_EQ(loaded->content, m.content);
  EXPECT_EQ(loaded->envelope.sender, m.envelope.sender);
  EXPECT_EQ(loaded->envelope.recipients, m.envelope.recipients);
  EXPECT_EQ(loaded->envelope.tls, m.envelope.tls);
}

// Real system calls, plus a gate: the first sync waits until release(), so
// a test can make requests pile up behind a batch that is committing; and
// failures: a chosen errno for a chosen step of a chosen file, or for the
// next directory fsync.
class ScriptedDisk : public SpoolDisk {
 public:
  struct Shared {
    std::mutex mutex;
    std::condition_variable changed;
    bool hold_first_sync = false;
    bool first_sync_entered = false;
    bool released = false;
    std::map<std::string, std::pair<std::string, int>> fail_file;  // id -> (step, errno)
    int fail_directory_sync_number = 0;  // 1-based; 0: none
    int fail_directory_sync_errno = 0;
    std::map<int, std::string> names;  // open descriptor -> file name
    int directory_syncs = 0;
    int max_parallel_syncs = 0;
    int syncs_now = 0;
    // Non-zero: a sync (after the held one) waits, up to 10 s, until this
    // many are in progress at once, so parallelism shows whatever the load.
    int rendezvous = 0;
    bool rendezvous_met = false;

    void release() {
      std::lock_guard lock(mutex);
      released = true;
      changed.notify_all();
    }
    void wait_first_sync() {
      std::unique_lock lock(mutex);
      ASSERT_TRUE(changed.wait_for(lock, 30s, [&] { return first_sync_entered; }));
    }
  };

  explicit ScriptedDisk(std::shared_ptr<Shared> shared) : s_(std::move(shared)) {}

  int create(int dir_fd, const std::string& name, int& fd) override {
    if (int err = injected(name, "create")) return err;
    const int err = SpoolDisk::create(dir_fd, name, fd);
    if (err == 0) {
      std::lock_guard lock(s_->mutex);
      s_->names[fd] = name;
    }
    return err;
  }
  int write(int fd, std::string_view data) override {
    if (int err = injected(name_of(fd), "write")) return err;
    return SpoolDisk::write(fd, data);
  }
  int sync(int fd) override {
    {
      std::unique_lock lock(s_->mutex);
      s_->max_parallel_syncs = std::max(s_->max_parallel_syncs, ++s_->syncs_now);
      if (s_->hold_first_sync && !s_->first_sync_entered) {
        s_->first_sync_entered = true;
        s_->changed.notify_all();
        s_->changed.wait_for(lock, 30s, [&] { return s_->released; });
      } else if (s_->rendezvous > 0 && !s_->rendezvous_met) {
        s_->changed.notify_all();
        s_->rendezvous_met = s_->changed.wait_for(lock, 10s, [&] {
          return s_->rendezvous_met || s_->syncs_now >= s_->rendezvous;
        });
        s_->changed.notify_all();
      }
    }
    int err = injected(name_of(fd), "sync");
    if (err == 0) err = SpoolDisk::sync(fd);
    std::lock_guard lock(s_->mutex);
    --s_->syncs_now;
    return err;
  }
  int close(int fd) override {
    const std::string name = name_of(fd);
    {
      std::lock_guard lock(s_->mutex);
      s_->names.erase(fd);
    }
    const int err = SpoolDisk::close(fd);
    if (int injected_err = injected(name, "close")) return injected_err;
    return err;
  }
  int rename(int from_dir, int to_dir, const std::string& name) override {
    if (int err = injected(name, "rename")) return err;
    return SpoolDisk::rename(from_dir, to_dir, name);
  }
  int sync_directory(int dir_fd) override {
    {
      std::lock_guard lock(s_->mutex);
      if (++s_->directory_syncs == s_->fail_directory_sync_number) return s_->fail_directory_sync_errno;
    }
    return SpoolDisk::sync_directory(dir_fd);
  }

 private:
  std::string name_of(int fd) {
    std::lock_guard lock(s_->mutex);
    auto it = s_->names.find(fd);
    return it == s_->names.end() ? std::string() : it->second;
  }
  int injected(const std::string& name, const std::string& step) {
    std::lock_guard lock(s_->mutex);
    auto it = s_->fail_file.find(name);
    return it != s_->fail_file.end() && it->second.first == step ? it->second.second : 0;
  }
  std::shared_ptr<Shared> s_;
};

class SpoolWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = Spool::open(dir_.path());
    ASSERT_TRUE(opened) << opened.error();
    spool_.emplace(opened.value());
  }
  std::unique_ptr<SpoolWriter> start(std::size_t threads, std::shared_ptr<ScriptedDisk::Shared> shared = nullptr) {
    std::unique_ptr<SpoolDisk> disk;
    if (shared) disk = std::make_unique<ScriptedDisk>(shared);
    auto writer = SpoolWriter::start(*spool_, threads, std::move(disk));
    EXPECT_TRUE(writer) << writer.error();
    return writer ? std::move(writer.value()) : nullptr;
  }
  // Holds the writer in the first sync of a one-message batch, then submits
  // messages (from several threads) so that they all wait for the next batch.
  void submit_behind_a_held_batch(SpoolWriter& writer, ScriptedDisk::Shared& shared, Message& first,
                                  std::vector<std::unique_ptr<Message>>& rest) {
    {
      std::lock_guard lock(shared.mutex);
      shared.hold_first_sync = true;
    }
    first.submit(writer);
    shared.wait_first_sync();
    std::vector<std::thread> submitters;
    for (std::size_t t = 0; t < 4; ++t) {
      submitters.emplace_back([&, t] {
        for (std::size_t i = t; i < rest.size(); i += 4) rest[i]->submit(writer);
      });
    }
    for (auto& s : submitters) s.join();
    shared.release();
  }

  fs::path tmp() const { return dir_.path() / "tmp"; }
  fs::path queue() const { return dir_.path() / "queue"; }

  TempDir dir_{"spool-writer"};
  std::optional<Spool> spool_;
};

TEST_F(SpoolWriterTest, ConcurrentStoresAllSucceedAndDecode) {
  auto writer = start(4);
  auto messages = make_messages(200);
  std::vector<std::thread> submitters;
  for (std::size_t t = 0; t < 8; ++t) {
    submitters.emplace_back([&, t] {
      for (std::size_t i = t; i < messages.size(); i += 8) messages[i]->submit(*writer);
    });
  }
  for (auto& s : submitters) s.join();
  std::set<std::string> ids;
  for (auto& m : messages) {
    auto result = m->result();
    EXPECT_TRUE(result) << result.error();
    ids.insert(m->envelope.id);
  }
  EXPECT_EQ(names_in(queue()), ids);
  EXPECT_TRUE(names_in(tmp()).empty());
  for (auto& m : messages) expect_stored(*spool_, *m);
  const auto stats = writer->stats();
  EXPECT_EQ(stats.messages, 200u);
  EXPECT_LE(stats.batches, 200u);
}

TEST_F(SpoolWriterTest, RequestsArrivingDuringACommitFormOneBatch) {
  auto shared = std::make_shared<ScriptedDisk::Shared>();
  shared->rendezvous = 2;
  auto writer = start(4, shared);
  Message first(new_queue_id());
  auto rest = make_messages(30);
  submit_behind_a_held_batch(*writer, *shared, first, rest);
  EXPECT_TRUE(first.result());
  for (auto& m : rest) EXPECT_TRUE(m->result());
  const auto stats = writer->stats();
  EXPECT_EQ(stats.batches, 2u);
  EXPECT_EQ(stats.messages, 31u);
  EXPECT_EQ(stats.largest_batch, 30u);
  // One directory fsync per batch, not per message; files synced in parallel.
  EXPECT_EQ(shared->directory_syncs, 2);
  EXPECT_GT(shared->max_parallel_syncs, 1);
  EXPECT_EQ(names_in(queue()).size(), 31u);
  for (auto& m : rest) expect_stored(*spool_, *m);
}

TEST_F(SpoolWriterTest, OneThreadStillBatches) {
  auto shared = std::make_shared<ScriptedDisk::Shared>();
  auto writer = start(1, shared);
  Message first(new_queue_id());
  auto rest = make_messages(10);
  submit_behind_a_held_batch(*writer, *shared, first, rest);
  for (auto& m : rest) EXPECT_TRUE(m->result());
  EXPECT_TRUE(first.result());
  EXPECT_EQ(writer->stats().batches, 2u);
  EXPECT_EQ(shared->max_parallel_syncs, 1);
  EXPECT_EQ(names_in(queue()).size(), 11u);
}

TEST_F(SpoolWriterTest, EachFailingStepFailsOnlyItsMessage) {
  auto shared = std::make_shared<ScriptedDisk::Shared>();
  auto writer = start(4, shared);
  Message first(new_queue_id());
  auto rest = make_messages(12);
  const std::vector<std::pair<std::string, int>> failures = {
      {"create", ENOSPC}, {"write", ENOSPC}, {"sync", EIO}, {"close", EDQUOT}, {"rename", EXDEV}};
  std::map<std::string, std::string> expected_step;  // id -> word in the error
  for (std::size_t i = 0; i < failures.size(); ++i) {
    const std::string& id = rest[2 * i]->envelope.id;
    shared->fail_file[id] = failures[i];
    expected_step[id] = failures[i].first == "sync" ? "fdatasync" : failures[i].first;
  }
  submit_behind_a_held_batch(*writer, *shared, first, rest);
  EXPECT_TRUE(first.result());
  std::set<std::string> stored{first.envelope.id};
  for (auto& m : rest) {
    auto result = m->result();
    auto it = expected_step.find(m->envelope.id);
    if (it == expected_step.end()) {
      EXPECT_TRUE(result) << result.error();
      stored.insert(m->envelope.id);
      expect_stored(*spool_, *m);
    } else {
      ASSERT_FALSE(result) << m->envelope.id;
      EXPECT_NE(result.error().find(it->second), std::string::npos) << result.error();
      EXPECT_NE(result.error().find(m->envelope.id), std::string::npos) << result.error();
    }
  }
  EXPECT_EQ(writer->stats().largest_batch, 12u);
  EXPECT_EQ(names_in(queue()), stored);  // nothing of a failed message in queue/
  EXPECT_TRUE(names_in(tmp()).empty());  // and nothing left in tmp/
}

TEST_F(SpoolWriterTest, FailedDirectoryFsyncFailsTheWholeBatchAndLeavesNothing) {
  auto shared = std::make_shared<ScriptedDisk::Shared>();
  shared->fail_directory_sync_number = 2;  // the second batch's
  shared->fail_directory_sync_errno = EIO;
  auto writer = start(4, shared);
  Message first(new_queue_id());
  auto doomed = make_messages(10);
  submit_behind_a_held_batch(*writer, *shared, first, doomed);
  EXPECT_TRUE(first.result());
  for (auto& m : doomed) {
    auto result = m->result();
    ASSERT_FALSE(result) << m->envelope.id;
    EXPECT_NE(result.error().find("spool: fsync " + queue().string() + ": "), std::string::npos) << result.error();
  }
  EXPECT_EQ(writer->stats().batches, 2u);
  EXPECT_EQ(names_in(queue()), std::set<std::string>{first.envelope.id});
  EXPECT_TRUE(names_in(tmp()).empty());

  // The writer goes on: the next batch commits.
  Message after(new_queue_id());
  after.submit(*writer);
  EXPECT_TRUE(after.result());
  expect_stored(*spool_, after);
}

TEST_F(SpoolWriterTest, ExistingQueueFileIsNeitherReplacedNorRemoved) {
  auto writer = start(2);
  Message m(new_queue_id());
  std::ofstream(queue() / m.envelope.id) << "someone else's";
  m.submit(*writer);
  auto result = m.result();
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().find("rename to"), std::string::npos) << result.error();
  EXPECT_EQ(test_read(queue() / m.envelope.id), "someone else's");
  EXPECT_TRUE(names_in(tmp()).empty());
}

TEST_F(SpoolWriterTest, InvalidEnvelopeFailsAlone) {
  auto writer = start(2);
  Message bad_id("../etc");
  Message bad_sender(new_queue_id());
  bad_sender.envelope.sender = "a\r\nrecipient evil@example";
  Message good(new_queue_id());
  bad_id.submit(*writer);
  bad_sender.submit(*writer);
  good.submit(*writer);
  EXPECT_FALSE(bad_id.result());
  EXPECT_FALSE(bad_sender.result());
  EXPECT_TRUE(good.result());
  EXPECT_EQ(names_in(queue()), std::set<std::string>{good.envelope.id});
  EXPECT_TRUE(names_in(tmp()).empty());
}

// A real write error, no injection: a file size limit makes write(2) fail
// with EFBIG for the one large message of a batch.
TEST_F(SpoolWriterTest, RealWriteErrorFailsOnlyThatMessage) {
  auto shared = std::make_shared<ScriptedDisk::Shared>();
  auto writer = start(4, shared);
  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit limit = old_limit;
  limit.rlim_cur = 64 * 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);

  Message first(new_queue_id());
  auto rest = make_messages(6);
  auto big = std::make_unique<Message>(new_queue_id(), 200 * 1024);
  const std::string big_id = big->envelope.id;
  rest.push_back(std::move(big));
  submit_behind_a_held_batch(*writer, *shared, first, rest);
  EXPECT_TRUE(first.result());
  for (auto& m : rest) {
    auto result = m->result();
    if (m->envelope.id == big_id) {
      ASSERT_FALSE(result);
      EXPECT_NE(result.error().find("write"), std::string::npos) << result.error();
    } else {
      EXPECT_TRUE(result) << result.error();
    }
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(names_in(queue()).size(), 7u);
  EXPECT_FALSE(fs::exists(queue() / big_id));
  EXPECT_TRUE(names_in(tmp()).empty());
}

TEST_F(SpoolWriterTest, DestructionCommitsWhatIsPending) {
  auto messages = make_messages(50);
  {
    auto writer = start(3);
    for (auto& m : messages) m->submit(*writer);
  }
  for (auto& m : messages) {
    auto result = m->result();
    EXPECT_TRUE(result) << result.error();
    expect_stored(*spool_, *m);
  }
}

TEST(SpoolWriterConfigTest, SyncThreadsKey) {
  const std::string base =
      "hostname = \"mx.example.test\"\nspool = \"/var/spool/mxgate\"\n"
      "[[listener]]\naddress = \"127.0.0.1:2525\"\ntls = \"none\"\n";
  auto defaults = config::parse(base, "/etc/mxgate");
  ASSERT_TRUE(defaults) << defaults.error();
  EXPECT_EQ(defaults->queue.sync_threads, 8u);
  auto three = config::parse(base + "[queue]\nsync_threads = 3\n", "/etc/mxgate");
  ASSERT_TRUE(three) << three.error();
  EXPECT_EQ(three->queue.sync_threads, 3u);
  for (const char* bad : {"0", "65", "\"4\""}) {
    auto refused = config::parse(base + "[queue]\nsync_threads = " + bad + "\n", "/etc/mxgate");
    ASSERT_FALSE(refused) << bad;
    EXPECT_EQ(refused.error().rfind("queue.sync_threads", 0), 0u) << refused.error();
  }
}

}  // namespace
}  // namespace mxgate::queue
