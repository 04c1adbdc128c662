// Delivery state sidecar files: round trip, durability-related behaviour
// (replace, no leftovers, mode 0700 directory), refusals, the format's
// defences against damage (every truncation, every stray line) and pruning.
#include "queue/delivery_state.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>
#include "temp_dir.hpp"

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

Envelope envelope(std::string id = "0ABC123") {
  Envelope e;
  e.id = std::move(id);
  e.sender = "alice@example.org";
  e.recipients = {"bob@example.com", "\"john doe\"@example.net", "dave@example.com"};
  e.received_unix = 1739440800;
  return e;
}

DeliveryState sample_state() {
  DeliveryState s = fresh_state(envelope());
  s.attempts = 3;
  s.first_attempt_unix = 1739440801;
  s.next_attempt_unix = 1739442000;
  s.last_error = "4.4.1 connection refused by mx.example.com:25";
  s.recipients[0].status = Status::delivered;
  s.recipients[0].last_reply = "250 2.0.0 Ok: queued as 4XYZ";
  s.recipients[1].status = Status::failed;
  s.recipients[1].last_reply =
      "550 5.1.1 <\"john doe\"@example.net>: Recipient address rejected: пользователь";
  s.recipients[2].last_reply = "451 4.3.0 Try again later";
  return s;
}

void expect_equal(const DeliveryState& a, const DeliveryState& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.attempts, b.attempts);
  EXPECT_EQ(a.first_attempt_unix, b.first_attempt_unix);
  EXPECT_EQ(a.next_attempt_unix, b.next_attempt_unix);
  EXPECT_EQ(a.last_error, b.last_error);
  ASSERT_EQ(a.recipients.size(), b.recipients.size());
  for (std::size_t i = 0; i < a.recipients.size(); ++i) {
    EXPECT_EQ(a.recipients[i].recipient, b.recipients[i].recipient);
    EXPECT_EQ(a.recipients[i].status, b.recipients[i].status);
    EXPECT_EQ(a.recipients[i].last_reply, b.recipients[i].last_reply);
  }
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return names;
}

TEST(DeliveryState, WithoutAFileEveryRecipientIsPending) {
  TempDir dir;
  auto state = load_state(dir.path(), envelope());
  ASSERT_TRUE(state) << state.error();
  EXPECT_EQ(state->id, "0ABC123");
  EXPECT_EQ(state->attempts, 0u);
  EXPECT_EQ(state->first_attempt_unix, 0);
  EXPECT_EQ(state->next_attempt_unix, 0);
  EXPECT_EQ(state->last_error, "");
  ASSERT_EQ(state->recipients.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(state->recipients[i].recipient, envelope().recipients[i]);
    EXPECT_EQ(state->recipients[i].status, Status::pending);
    EXPECT_EQ(state->recipients[i].last_reply, "");
  }
  EXPECT_FALSE(fs::exists(dir.path() / "state")) << "loading creates nothing";
}

TEST(DeliveryState, SaveThenLoadRoundTrips) {
  TempDir dir;
  const DeliveryState saved = sample_state();
  ASSERT_TRUE(save_state(dir.path(), saved));
  auto loaded = load_state(dir.path(), envelope());
  ASSERT_TRUE(loaded) << loaded.error();
  expect_equal(*loaded, saved);
}

TEST(DeliveryState, FileFormatIsTheDocumentedOne) {
  TempDir dir;
  ASSERT_TRUE(save_state(dir.path(), sample_state()));
  EXPECT_EQ(read_file(dir.path() / "state" / "0ABC123"),
            "MXGATE-STATE 1\n"
            "id 0ABC123\n"
            "attempts 3\n"
            "first-attempt 1739440801\n"
            "next-attempt 1739442000\n"
            "last-error 4.4.1 connection refused by mx.example.com:25\n"
            "recipient delivered bob@example.com\n"
            "reply 250 2.0.0 Ok: queued as 4XYZ\n"
            "recipient failed \"john doe\"@example.net\n"
            "reply 550 5.1.1 <\"john doe\"@example.net>: Recipient address rejected: пользователь\n"
            "recipient pending dave@example.com\n"
            "reply 451 4.3.0 Try again later\n"
            "end\n");
}

TEST(DeliveryState, StateDirectoryIsCreatedPrivate) {
  TempDir dir;
  ASSERT_TRUE(save_state(dir.path(), sample_state()));
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() / "state").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir.path() / "state" / "0ABC123").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(DeliveryState, SaveReplacesAndLeavesNoTemporaryFile) {
  TempDir dir;
  DeliveryState s = sample_state();
  ASSERT_TRUE(save_state(dir.path(), s));
  s.attempts = 4;
  s.recipients[2].status = Status::delivered;
  s.recipients[2].last_reply = "250 ok";
  ASSERT_TRUE(save_state(dir.path(), s));
  auto loaded = load_state(dir.path(), envelope());
  ASSERT_TRUE(loaded) << loaded.error();
  expect_equal(*loaded, s);
  EXPECT_EQ(entries(dir.path() / "state"), std::vector<std::string>{"0ABC123"});
}

TEST(DeliveryState, LineBreaksInTextBecomeSpaces) {
  TempDir dir;
  DeliveryState s = sample_state();
  s.last_error = "first\r\nsecond\rthird\nfourth";
  s.recipients[0].last_reply = "550-5.1.1 one\r\n550 5.1.1 two";
  ASSERT_TRUE(save_state(dir.path(), s));
  auto loaded = load_state(dir.path(), envelope());
  ASSERT_TRUE(loaded) << loaded.error();
  EXPECT_EQ(loaded->last_error, "first  second third fourth");
  EXPECT_EQ(loaded->recipients[0].last_reply, "550-5.1.1 one  550 5.1.1 two");
}

TEST(DeliveryState, EmptyTextsRoundTrip) {
  TempDir dir;
  DeliveryState s = fresh_state(envelope());
  s.attempts = 1;
  ASSERT_TRUE(save_state(dir.path(), s));
  auto loaded = load_state(dir.path(), envelope());
  ASSERT_TRUE(loaded) << loaded.error();
  expect_equal(*loaded, s);
}

TEST(DeliveryState, AddressWithLineBreakOrEmptyIsRefused) {
  TempDir dir;
  DeliveryState s = sample_state();
  s.recipients[1].recipient = "x@example.com\nrecipient delivered y@example.com";
  EXPECT_FALSE(save_state(dir.path(), s));
  s.recipients[1].recipient = "";
  EXPECT_FALSE(save_state(dir.path(), s));
  EXPECT_FALSE(fs::exists(dir.path() / "state" / "0ABC123"));
}

TEST(DeliveryState, InvalidIdsNeverBecomePaths) {
  TempDir dir;
  fs::create_directories(dir.path() / "sub" / "state");
  const fs::path spool = dir.path() / "sub";
  write_file(dir.path() / "victim", "keep");
  for (const std::string& id :
       std::vector<std::string>{"", "../victim", "..", "abc", "A/B", "A B", std::string(65, 'A')}) {
    DeliveryState s = sample_state();
    s.id = id;
    EXPECT_FALSE(save_state(spool, s)) << id;
    EXPECT_FALSE(remove_state(spool, id)) << id;
    EXPECT_FALSE(read_state(spool, id)) << id;
    EXPECT_FALSE(valid_queue_id(id)) << id;
  }
  EXPECT_EQ(read_file(dir.path() / "victim"), "keep");
  EXPECT_TRUE(valid_queue_id(std::string(64, 'Z')));
  EXPECT_TRUE(valid_queue_id("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
}

TEST(DeliveryState, RemoveDeletesAndToleratesAMissingFile) {
  TempDir dir;
  ASSERT_TRUE(save_state(dir.path(), sample_state()));
  ASSERT_TRUE(remove_state(dir.path(), "0ABC123"));
  EXPECT_FALSE(fs::exists(dir.path() / "state" / "0ABC123"));
  EXPECT_TRUE(remove_state(dir.path(), "0ABC123"));
  TempDir no_state_dir;
  EXPECT_TRUE(remove_state(no_state_dir.path(), "0ABC123"));
}

TEST(DeliveryState, ReadStateWithoutEnvelope) {
  TempDir dir;
  auto none = read_state(dir.path(), "0ABC123");
  ASSERT_TRUE(none) << none.error();
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(save_state(dir.path(), sample_state()));
  auto some = read_state(dir.path(), "0ABC123");
  ASSERT_TRUE(some) << some.error();
  ASSERT_TRUE(some->has_value());
  expect_equal(**some, sample_state());
}

TEST(DeliveryState, RecipientsDifferentFromTheEnvelopeAreCorrupt) {
  TempDir dir;
  ASSERT_TRUE(save_state(dir.path(), sample_state()));
  Envelope fewer = envelope();
  fewer.recipients.pop_back();
  Envelope reordered = envelope();
  std::swap(reordered.recipients[0], reordered.recipients[2]);
  Envelope more = envelope();
  more.recipients.push_back("eve@example.com");
  for (const Envelope& e : {fewer, reordered, more}) {
    auto loaded = load_state(dir.path(), e);
    ASSERT_FALSE(loaded);
    EXPECT_NE(loaded.error().find("corrupt"), std::string::npos) << loaded.error();
  }
}

TEST(DeliveryState, EveryTruncationIsCorrupt) {
  auto text = encode_state(sample_state());
  ASSERT_TRUE(text) << text.error();
  ASSERT_TRUE(decode_state(*text, "0ABC123"));
  for (std::size_t n = 0; n < text->size(); ++n) {
    auto decoded = decode_state(std::string_view(*text).substr(0, n), "0ABC123");
    EXPECT_FALSE(decoded) << "prefix of " << n << " bytes accepted";
    if (!decoded) {
      EXPECT_NE(decoded.error().find("corrupt"), std::string::npos);
    }
  }
}

TEST(DeliveryState, DamagedFilesAreCorrupt) {
  const std::string good = encode_state(sample_state()).value();
  auto replace = [&](std::string_view from, std::string_view to) {
    std::string s = good;
    const auto at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  const std::vector<std::string> bad = {
      "",
      "garbage\n",
      replace("MXGATE-STATE 1", "MXGATE-STATE 2"),
      replace("id 0ABC123", "id 0ABC124"),
      replace("attempts 3", "attempts -3"),
      replace("attempts 3", "attempts +3"),
      replace("attempts 3", "attempts 3x"),
      replace("attempts 3", "attempts 99999999999"),
      replace("first-attempt 1739440801", "first-attempt"),
      replace("next-attempt 1739442000", "next-attempt one"),
      replace("last-error 4.4.1", "last-error\r4.4.1"),
      replace("recipient delivered", "recipient bounced"),
      replace("recipient delivered bob@example.com", "recipient delivered "),
      replace("recipient delivered bob@example.com", "recipient delivered"),
      replace("reply 250 2.0.0", "rply 250 2.0.0"),
      replace("attempts 3\nfirst-attempt 1739440801\n", "first-attempt 1739440801\nattempts 3\n"),
      replace("attempts 3\n", "attempts 3\nattempts 3\n"),
      replace("last-error", "color blue\nlast-error"),
      replace("end\n", "end\nend\n"),
      replace("end\n", "end\nrecipient pending x@example.com\n"),
      replace("end\n", "end"),
      replace("end\n", "END\n"),
      "MXGATE-STATE 1\nid 0ABC123\nattempts 0\nfirst-attempt 0\nnext-attempt 0\nlast-error \nend\n",
  };
  for (const auto& file : bad) {
    auto decoded = decode_state(file, "0ABC123");
    EXPECT_FALSE(decoded) << "accepted:\n" << file;
  }
}

TEST(DeliveryState, CorruptFileIsReportedByLoad) {
  TempDir dir;
  write_file(dir.path() / "state" / "0ABC123", "MXGATE-STATE 1\nid 0ABC123\n");
  auto loaded = load_state(dir.path(), envelope());
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().find("corrupt"), std::string::npos) << loaded.error();
  // The documented way out: remove and start fresh.
  ASSERT_TRUE(remove_state(dir.path(), "0ABC123"));
  EXPECT_TRUE(load_state(dir.path(), envelope()));
}

TEST(DeliveryState, FinishedWhenNoRecipientIsPending) {
  DeliveryState s = sample_state();
  EXPECT_FALSE(finished(s));
  s.recipients[2].status = Status::failed;
  EXPECT_TRUE(finished(s));
  EXPECT_FALSE(finished(fresh_state(envelope())));
}

TEST(DeliveryState, StatusNames) {
  EXPECT_EQ(status_name(Status::pending), "pending");
  EXPECT_EQ(status_name(Status::delivered), "delivered");
  EXPECT_EQ(status_name(Status::failed), "failed");
}

TEST(DeliveryState, PruneRemovesOrphansAndLeftoversOnly) {
  TempDir dir;
  write_file(dir.path() / "queue" / "0LIVE", "message");
  DeliveryState live = sample_state();
  live.id = "0LIVE";
  DeliveryState orphan = sample_state();
  orphan.id = "0GONE";
  ASSERT_TRUE(save_state(dir.path(), live));
  ASSERT_TRUE(save_state(dir.path(), orphan));
  write_file(dir.path() / "state" / ".tmp-0LIVE-123-0", "half");
  write_file(dir.path() / "state" / "notes.txt", "not ours");
  auto removed = prune_states(dir.path());
  ASSERT_TRUE(removed) << removed.error();
  EXPECT_EQ(*removed, 2u);
  EXPECT_TRUE(fs::exists(dir.path() / "state" / "0LIVE"));
  EXPECT_FALSE(fs::exists(dir.path() / "state" / "0GONE"));
  EXPECT_FALSE(fs::exists(dir.path() / "state" / ".tmp-0LIVE-123-0"));
  EXPECT_TRUE(fs::exists(dir.path() / "state" / "notes.txt"));
}

TEST(DeliveryState, PruneWithoutStateDirectoryIsANoOp) {
  TempDir dir;
  auto removed = prune_states(dir.path());
  ASSERT_TRUE(removed) << removed.error();
  EXPECT_EQ(*removed, 0u);
}

TEST(DeliveryState, SaveFailsCleanlyWhenTheDirectoryCannotBeCreated) {
  TempDir dir;
  write_file(dir.path() / "state", "a file where the directory should be");
  EXPECT_FALSE(save_state(dir.path(), sample_state()));
}

}  // namespace
}  // namespace mxgate::queue
