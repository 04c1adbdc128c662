// The spool: durable store/list/load/remove, the file format's defences
// against damage, and queue IDs.
#include "queue/spool.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include "temp_dir.hpp"

namespace mxgate::queue {
namespace {

namespace fs = std::filesystem;

using test_support::TempDir;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::size_t count_entries(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

Envelope sample_envelope(std::string id) {
  Envelope e;
  e.id = std::move(id);
  e.sender =
      "j\xC3\xB6rg@b\xC3\xBC"
      "cher.example";  // jörg@bücher.example
  e.recipients = {"\xE7\x94\xA8\xE6\x88\xB7@\xE4\xBE\x8B\xE5\xAD\x90.\xE5\xB9\xBF\xE5\x91\x8A", "postmaster",
                  "a b@example.test"};
  e.smtputf8 = true;
  e.body_8bitmime = true;
  e.client_address = "2001:db8::25";
  e.helo = "client.example";
  e.tls = "TLSv1.3 TLS_AES_256_GCM_SHA384";
  e.received_unix = 1700000000;
  return e;
}

// Every byte value, bare CR and LF, NULs, and a dot line.
std::string binary_content() {
  std::string content = "Received: from client\r\nSubject: \xFF\xFE\r\n\r\n";
  for (int i = 0; i < 256; ++i) content.push_back(static_cast<char>(i));
  content += std::string("\0\0\r\r\n\n.\r\n", 9);
  content += "\r\n.\r\nsize 5\n\nMXGATE-SPOOL 1\n";
  return content;
}

void expect_same_envelope(const Envelope& a, const Envelope& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.sender, b.sender);
  EXPECT_EQ(a.recipients, b.recipients);
  EXPECT_EQ(a.smtputf8, b.smtputf8);
  EXPECT_EQ(a.body_8bitmime, b.body_8bitmime);
  EXPECT_EQ(a.client_address, b.client_address);
  EXPECT_EQ(a.helo, b.helo);
  EXPECT_EQ(a.tls, b.tls);
  EXPECT_EQ(a.received_unix, b.received_unix);
}

TEST(SpoolTest, OpenCreatesDirectories) {
  TempDir dir;
  auto spool = Spool::open(dir.path() / "spool");
  ASSERT_TRUE(spool) << spool.error();
  EXPECT_TRUE(fs::is_directory(dir.path() / "spool" / "tmp"));
  EXPECT_TRUE(fs::is_directory(dir.path() / "spool" / "queue"));
  EXPECT_EQ(spool->directory(), dir.path() / "spool");
  EXPECT_TRUE(spool->list().empty());
}

TEST(SpoolTest, OpenFailsWhenTheDirectoryCannotBeMade) {
  TempDir dir;
  write_file(dir.path() / "file", "x");
  auto spool = Spool::open(dir.path() / "file");
  ASSERT_FALSE(spool);
  EXPECT_EQ(spool.error(), "spool: create directory " + (dir.path() / "file").string() + ": Not a directory");
}

TEST(SpoolTest, OpenRemovesLeftoversInTmp) {
  TempDir dir;
  fs::create_directories(dir.path() / "tmp");
  write_file(dir.path() / "tmp" / "0000000000000000", "half a message");
  write_file(dir.path() / "tmp" / "junk", "x");
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  EXPECT_EQ(count_entries(dir.path() / "tmp"), 0u);
  EXPECT_TRUE(spool->list().empty());
}

TEST(SpoolTest, RoundTripWithBinaryContentAndUtf8Addresses) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  const Envelope envelope = sample_envelope(new_queue_id());
  const std::string content = binary_content();

  auto stored = spool->store(envelope, content);
  ASSERT_TRUE(stored) << stored.error();
  EXPECT_EQ(count_entries(dir.path() / "tmp"), 0u);
  EXPECT_EQ(spool->list(), std::vector<std::string>{envelope.id});

  auto loaded = spool->load(envelope.id);
  ASSERT_TRUE(loaded) << loaded.error();
  expect_same_envelope(loaded->envelope, envelope);
  EXPECT_EQ(loaded->content, content);

  // A fresh Spool over the same directory (a restart) sees the same message.
  auto reopened = Spool::open(dir.path());
  ASSERT_TRUE(reopened) << reopened.error();
  EXPECT_EQ(reopened->list(), std::vector<std::string>{envelope.id});

  auto removed = spool->remove(envelope.id);
  ASSERT_TRUE(removed) << removed.error();
  EXPECT_TRUE(spool->list().empty());
  EXPECT_FALSE(spool->load(envelope.id));
  EXPECT_FALSE(spool->remove(envelope.id));
}

TEST(SpoolTest, NullSenderEmptyContentAndDefaults) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  Envelope envelope;
  envelope.id = new_queue_id();
  envelope.recipients = {"r@example.test"};
  envelope.received_unix = -1;
  ASSERT_TRUE(spool->store(envelope, ""));
  auto loaded = spool->load(envelope.id);
  ASSERT_TRUE(loaded) << loaded.error();
  expect_same_envelope(loaded->envelope, envelope);
  EXPECT_EQ(loaded->content, "");
}

TEST(SpoolTest, FileFormatIsTheDocumentedOne) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  Envelope e;
  e.id = "ABC123";
  e.sender = "s@example.test";
  e.recipients = {"r1@example.test", "r2@example.test"};
  e.body_8bitmime = true;
  e.client_address = "192.0.2.7";
  e.helo = "client.example";
  e.received_unix = 1700000000;
  ASSERT_TRUE(spool->store(e, "Subject: x\r\n\r\nbody\r\n"));
  EXPECT_EQ(read_file(dir.path() / "queue" / "ABC123"),
            "MXGATE-SPOOL 1\n"
            "id ABC123\n"
            "received 1700000000\n"
            "sender s@example.test\n"
            "recipient r1@example.test\n"
            "recipient r2@example.test\n"
            "smtputf8 0\n"
            "8bitmime 1\n"
            "client 192.0.2.7\n"
            "helo client.example\n"
            "tls \n"
            "size 20\n"
            "\n"
            "Subject: x\r\n\r\nbody\r\n");
}

TEST(SpoolTest, StoreRefusesBadEnvelopesAndLeavesNothing) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  auto refused = [&](Envelope e) {
    auto result = spool->store(e, "content");
    EXPECT_EQ(count_entries(dir.path() / "tmp"), 0u);
    EXPECT_EQ(count_entries(dir.path() / "queue"), 0u);
    return result ? std::string("OK") : result.error();
  };
  Envelope e = sample_envelope("ID1");
  e.sender = "a\r\nrecipient evil@example";
  EXPECT_EQ(refused(e), "spool: envelope sender contains CR or LF");
  e = sample_envelope("ID1");
  e.helo = "x\ny";
  EXPECT_EQ(refused(e), "spool: envelope helo contains CR or LF");
  e = sample_envelope("ID1");
  e.recipients.push_back("x\ry");
  EXPECT_EQ(refused(e), "spool: envelope recipient is empty or contains CR or LF");
  e = sample_envelope("ID1");
  e.recipients.clear();
  EXPECT_EQ(refused(e), "spool: envelope has no recipients");
  for (const std::string bad_id : {"", "../x", "abc", "A/B", "A B"}) {
    EXPECT_EQ(refused(sample_envelope(bad_id)), "spool: invalid queue id (expected [0-9A-Z]+)");
  }
}

TEST(SpoolTest, StoreNeverReplacesAnExistingMessage) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  ASSERT_TRUE(spool->store(sample_envelope("SAME"), "first"));
  auto second = spool->store(sample_envelope("SAME"), "second");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error(), "spool: rename to " + (dir.path() / "queue" / "SAME").string() + ": File exists");
  EXPECT_EQ(count_entries(dir.path() / "tmp"), 0u);
  EXPECT_EQ(spool->load("SAME")->content, "first");
}

TEST(SpoolTest, StoreReportsErrnoWhenQueueIsUnusable) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  fs::remove(dir.path() / "queue");
  write_file(dir.path() / "queue", "not a directory");
  auto stored = spool->store(sample_envelope("X1"), "content");
  ASSERT_FALSE(stored);
  EXPECT_NE(stored.error().find("Not a directory"), std::string::npos) << stored.error();
  EXPECT_EQ(count_entries(dir.path() / "tmp"), 0u);
}

TEST(SpoolTest, ReadReusesABufferAndBothDecodesAgree) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  // Larger than read_all's 4 KiB probe and than one read(2) of a pipe, and
  // not a multiple of a page, so every path of the read loop runs.
  std::string big;
  for (int i = 0; big.size() < 3 * 1024 * 1024 + 17; ++i) big += "line " + std::to_string(i) + "\r\n";
  for (const std::string& content : {std::string(), std::string("x"), binary_content(), big}) {
    const Envelope envelope = sample_envelope(new_queue_id());
    ASSERT_TRUE(spool->store(envelope, content));
    // A buffer left from an earlier, different message: its bytes must not
    // show through, and a small one grows as needed.
    for (std::string stale : {std::string(), std::string(64, 'Z'), std::string(5 * 1024 * 1024, 'Z')}) {
      const std::size_t stale_capacity = stale.capacity();
      auto bytes = spool->read(envelope.id, std::move(stale));
      ASSERT_TRUE(bytes) << bytes.error();
      EXPECT_EQ(*bytes, read_file(dir.path() / "queue" / envelope.id));
      if (stale_capacity >= bytes->size()) {
        EXPECT_EQ(bytes->capacity(), stale_capacity) << "the given buffer is reused, not replaced";
      }
      auto by_view = Spool::decode(std::string_view(*bytes), envelope.id);
      auto by_move = Spool::decode(std::move(*bytes), envelope.id);
      ASSERT_TRUE(by_view) << by_view.error();
      ASSERT_TRUE(by_move) << by_move.error();
      EXPECT_EQ(by_view->content, content);
      EXPECT_EQ(by_move->content, content);
      expect_same_envelope(by_move->envelope, envelope);
    }
  }
}

// The delivery path: content read into a handed-back buffer, header parsed
// from the first read, for small and large messages and for a header too
// long for that first read (thousands of recipients).
TEST(SpoolTest, LoadIntoAReusedBufferMatchesDecode) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  std::string big;
  for (int i = 0; big.size() < 3 * 1024 * 1024 + 17; ++i) big += "line " + std::to_string(i) + "\r\n";
  Envelope crowded = sample_envelope(new_queue_id());
  for (int i = 0; i < 2000; ++i) crowded.recipients.push_back("user" + std::to_string(i) + "@example.test");
  std::vector<std::pair<Envelope, std::string>> cases;
  for (const std::string& content : {std::string(), std::string("x"), binary_content(), std::string(16 * 1024, 'q'), big})
    cases.emplace_back(sample_envelope(new_queue_id()), content);
  cases.emplace_back(crowded, "hello\r\n");
  crowded.id = new_queue_id();
  cases.emplace_back(crowded, big);
  for (const auto& [envelope, content] : cases) {
    ASSERT_TRUE(spool->store(envelope, content));
    for (std::string stale : {std::string(), std::string(64, 'Z'), std::string(5 * 1024 * 1024, 'Z')}) {
      Spool::LoadFailure failure = Spool::LoadFailure::io;
      auto loaded = spool->load(envelope.id, std::move(stale), failure);
      ASSERT_TRUE(loaded) << loaded.error();
      EXPECT_EQ(failure, Spool::LoadFailure::none);
      EXPECT_EQ(loaded->content, content) << "stale bytes must not show through";
      EXPECT_FALSE(loaded->content_pending);
      expect_same_envelope(loaded->envelope, envelope);
    }
    // The envelope alone unless the content came with the first read.
    Spool::LoadFailure failure = Spool::LoadFailure::io;
    auto head = spool->load(envelope.id, {}, failure, Spool::ContentRead::if_small);
    ASSERT_TRUE(head) << head.error();
    EXPECT_EQ(failure, Spool::LoadFailure::none);
    expect_same_envelope(head->envelope, envelope);
    const bool small = content.size() < 8 * 1024 && envelope.recipients.size() < 10;
    const bool huge_header = envelope.recipients.size() > 1000;  // read whole: the header outgrows the first read
    if (small || huge_header) {
      EXPECT_FALSE(head->content_pending);
      EXPECT_EQ(head->content, content);
    } else {
      EXPECT_TRUE(head->content_pending);
      EXPECT_TRUE(head->content.empty());
    }
  }
}

TEST(SpoolTest, LoadTellsAMissingFileFromACorruptOne) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  Spool::LoadFailure failure = Spool::LoadFailure::none;
  EXPECT_FALSE(spool->load("GONE", {}, failure));
  EXPECT_EQ(failure, Spool::LoadFailure::io);

  ASSERT_TRUE(spool->store(sample_envelope("T2"), "0123456789"));
  const fs::path file = dir.path() / "queue" / "T2";
  const std::string whole = read_file(file);
  for (const std::string& damaged : {whole.substr(0, whole.size() - 1), whole + "X", whole.substr(0, 20),
                                     "MXGATE-SPOOL 9\n" + whole.substr(15)}) {
    write_file(file, damaged);
    failure = Spool::LoadFailure::none;
    auto loaded = spool->load("T2", std::string(100, 'Z'), failure);
    ASSERT_FALSE(loaded);
    EXPECT_EQ(failure, Spool::LoadFailure::corrupt) << loaded.error();
    EXPECT_EQ(loaded.error().rfind("spool: T2: corrupt: ", 0), 0u) << loaded.error();
  }
}

TEST(SpoolTest, TruncatedOrExtendedFilesAreRejected) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  ASSERT_TRUE(spool->store(sample_envelope("T1"), "0123456789"));
  const fs::path file = dir.path() / "queue" / "T1";
  const std::string whole = read_file(file);

  write_file(file, whole.substr(0, whole.size() - 1));
  auto truncated = spool->load("T1");
  ASSERT_FALSE(truncated);
  EXPECT_EQ(truncated.error(), "spool: T1: corrupt: truncated: 10 content bytes declared, 9 present");

  write_file(file, whole + "X");
  auto extended = spool->load("T1");
  ASSERT_FALSE(extended);
  EXPECT_EQ(extended.error(), "spool: T1: corrupt: 1 bytes after the declared content");

  // Cut inside the header, at every length: never accepted, never a crash.
  for (std::size_t n = 0; n + 10 < whole.size(); ++n) {
    EXPECT_FALSE(Spool::decode(whole.substr(0, n), "T1")) << "length " << n;
  }
  EXPECT_TRUE(Spool::decode(whole, "T1"));
}

TEST(SpoolTest, DamagedHeadersAreRejected) {
  const std::string good =
      "MXGATE-SPOOL 1\nid X\nreceived 1\nsender \nrecipient r\nsmtputf8 0\n8bitmime 0\n"
      "client \nhelo \ntls \nsize 2\n\nhi";
  ASSERT_TRUE(Spool::decode(good, "X"));
  auto error = [](const std::string& file, std::string_view id = "X") {
    auto result = Spool::decode(file, id);
    return result ? std::string("OK") : result.error();
  };
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  EXPECT_EQ(error(good, "Y"), "spool: Y: corrupt: bad or repeated header field id");
  EXPECT_EQ(error("hello"), "spool: X: corrupt: not a spool file");
  EXPECT_EQ(error(replace("SPOOL 1", "SPOOL 2")), "spool: X: corrupt: unsupported format version");
  EXPECT_EQ(error(replace("received 1\n", "")), "spool: X: corrupt: missing header field");
  EXPECT_EQ(error(replace("recipient r\n", "")), "spool: X: corrupt: missing header field");
  EXPECT_EQ(error(replace("received 1", "received x")),
            "spool: X: corrupt: bad or repeated header field received");
  EXPECT_EQ(error(replace("size 2", "size -2")), "spool: X: corrupt: bad or repeated header field size");
  EXPECT_EQ(error(replace("size 2", "size +2")), "spool: X: corrupt: bad or repeated header field size");
  EXPECT_EQ(error(replace("smtputf8 0", "smtputf8 yes")),
            "spool: X: corrupt: bad or repeated header field smtputf8");
  EXPECT_EQ(error(replace("helo \n", "helo \nhelo \n")),
            "spool: X: corrupt: bad or repeated header field helo");
  EXPECT_EQ(error(replace("tls \n", "tls \nextra 1\n")), "spool: X: corrupt: unknown header field");
  EXPECT_EQ(error(replace("tls \n", "tls\n")), "spool: X: corrupt: header line without a value");
  EXPECT_EQ(error(replace("client \n", "client a\r\n")), "spool: X: corrupt: CR in header");
  EXPECT_EQ(error(replace("recipient r", "recipient ")),
            "spool: X: corrupt: bad or repeated header field recipient");
}

TEST(SpoolTest, QuarantineMovesAFileAside) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  write_file(dir.path() / "queue" / "BAD1", "garbage");
  EXPECT_FALSE(spool->load("BAD1"));
  auto moved = spool->quarantine("BAD1");
  ASSERT_TRUE(moved) << moved.error();
  EXPECT_TRUE(spool->list().empty());
  EXPECT_EQ(read_file(dir.path() / "corrupt" / "BAD1"), "garbage");
}

TEST(SpoolTest, ListIsSortedAndIgnoresForeignNames) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  for (const char* id : {"0000C", "0000A", "0000B"}) ASSERT_TRUE(spool->store(sample_envelope(id), "x"));
  write_file(dir.path() / "queue" / ".hidden", "x");
  write_file(dir.path() / "queue" / "lower", "x");
  EXPECT_EQ(spool->list(), (std::vector<std::string>{"0000A", "0000B", "0000C"}));
}

TEST(SpoolTest, ConcurrentStoresOfDistinctIds) {
  TempDir dir;
  auto spool = Spool::open(dir.path());
  ASSERT_TRUE(spool) << spool.error();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        if (!spool->store(sample_envelope(new_queue_id()), "content")) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(spool->list().size(), 100u);
}

TEST(SpoolQueueIdTest, Format) {
  const std::string id = new_queue_id();
  ASSERT_EQ(id.size(), 16u);
  for (char c : id) EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'A' && c <= 'V')) << id;
}

TEST(SpoolQueueIdTest, UniqueAcrossThreads) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20000;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&ids, t] {
      ids[t].reserve(kPerThread);
      for (int i = 0; i < kPerThread; ++i) ids[t].push_back(new_queue_id());
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> all;
  for (const auto& v : ids) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), static_cast<std::size_t>(kThreads * kPerThread));
}

TEST(SpoolQueueIdTest, SortsByTime) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(new_queue_id());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_LT(ids.front().substr(0, 11), ids.back().substr(0, 11));
  // The time part is microseconds since the epoch, so it decodes to about now.
  std::uint64_t micros = 0;
  for (char c : ids.back().substr(0, 11)) {
    micros = micros * 32 + static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'A' + 10);
  }
  const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  EXPECT_LT(static_cast<std::int64_t>(micros), now + 1);
  EXPECT_GT(static_cast<std::int64_t>(micros), now - 10'000'000);
}

}  // namespace
}  // namespace mxgate::queue
