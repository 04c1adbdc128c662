// The milter client (src/milter/client.hpp) against real milters: the
// fixtures start clamav-milter (with a real clamd) and opendkim from
// configurations they write into a temp dir, on Unix sockets there (TCP on
// 127.0.0.1 for one test), wait until each answers SMFIC_OPTNEG, and always
// stop them in TearDown (SIGTERM, SIGKILL after kStopGrace: libmilter only
// notices SIGTERM when its listener's poll times out, about 4.5 s later; the
// children also have PR_SET_PDEATHSIG, so a crashed test binary leaves no
// daemon behind).  Start-up times are printed and recorded as properties.
//
// clamd gets the one-line signature database of tests/unit/
// filter_clamd_client_test.cpp: EICAR, joined at run time from two halves so
// no file of the repository holds the string.  opendkim gets a key made by
// opendkim-genkey in the test and its public half through TestPublicKeys, so
// no DNS is needed.  What it signs through us (c=simple/simple, so any byte
// we change breaks it) is verified twice: by opendkim as a milter through us
// again, and, on the bytes apply_header_changes produced, by mxgate's own
// DKIM verifier (src/sender_auth/dkim.hpp, verify_with_key), an independent
// reader.  (opendkim's file mode, -t, is no oracle here: its reader drops
// white space after the colon and fails simple-canonicalized signatures over
// "Subject:  two spaces" that both other verifiers accept.)
//
// Misbehaving milters (silent, hanging up, answering garbage, sending
// SMFIR_PROGRESS) are tiny Asio servers in the test.  The endpoint parser is
// tested here too.  Tests needing a daemon are skipped when it is missing
// (Debian packages clamav-daemon, clamav-milter, opendkim, opendkim-tools).
#include "milter/client.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "milter/codec.hpp"
#include "sender_auth/dkim.hpp"
#include "daemon_fixture.hpp"
#include "local_server.hpp"
#include "run_coroutine.hpp"
#include "temp_dir.hpp"

namespace mxgate::milter {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
using test_support::clamd_pings;
using test_support::Daemon;
using test_support::eicar;
using test_support::free_tcp_port;
using test_support::hex;
using test_support::ms_since;
using test_support::probe_exchange;
using test_support::read_text;
using test_support::write_text;

constexpr const char* kClamd = "/usr/sbin/clamd";
constexpr const char* kClamavMilter = "/usr/sbin/clamav-milter";
constexpr const char* kOpendkim = "/usr/sbin/opendkim";
constexpr const char* kOpendkimGenkey = "/usr/sbin/opendkim-genkey";
constexpr std::chrono::milliseconds kStopGrace{200};
constexpr std::chrono::milliseconds kMilterTimeout{10000};

// A milter answers SMFIC_OPTNEG with its own (4 + 1 + 12 bytes at least).
bool milter_negotiates(const MilterEndpoint& endpoint) {
  const std::string reply = probe_exchange(
      endpoint.kind == MilterEndpoint::Kind::unix_socket ? endpoint.path : std::string(), endpoint.port,
      encode_option_negotiation(6, MilterSession::kOfferedActions, MilterSession::kOfferedProtocol), 17);
  return reply.size() >= 17 && reply[4] == 'O';
}

// Runs a command to its end (bounded); its exit status and output.
struct CommandResult {
  int status = -1;
  std::string output;
};
CommandResult run_command(const std::vector<std::string>& argv, const fs::path& output,
                          std::chrono::seconds bound = 30s) {
  CommandResult result;
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out);
  const auto until = Clock::now() + bound;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  result.status = status;
  result.output = read_text(output);
  return result;
}

using test_support::run;

Result<MilterResult> milter(asio::io_context& io, const MilterEndpoint& endpoint,
                            const MilterMessage& message,
                            std::chrono::milliseconds timeout = kMilterTimeout) {
  auto result = run(io, run_milter(endpoint, message, timeout));
  if (!result) return make_error("no result");
  return std::move(*result);
}

MilterMessage message(std::string content, std::string client_address = "192.0.2.1") {
  MilterMessage m;
  m.client_address = std::move(client_address);
  m.client_port = 40000;
  m.client_name = "[" + m.client_address + "]";
  m.helo = "client.example";
  m.sender = "alice@example.com";
  m.recipients = {"bob@example.org"};
  m.content = std::move(content);
  m.queue_id = "4XyZ1";
  m.our_hostname = "mx.test";
  return m;
}

// The value of the last change of that name.
std::string value_of(const MilterResult& result, std::string_view name) {
  std::string value = "(none)";
  for (const HeaderChange& change : result.header_changes)
    if (change.name == name) value = change.value;
  return value;
}

MilterEndpoint unix_endpoint(const fs::path& path) {
  return MilterEndpoint{MilterEndpoint::Kind::unix_socket, path.string(), "", 0};
}

// ---------------------------------------------------------------------------
// clamav-milter with a real clamd

class ClamavMilterTest : public testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kClamd) || !fs::exists(kClamavMilter))
      GTEST_SKIP() << "clamd or clamav-milter is not installed";
    const fs::path dir = dir_.path();
    write_text(dir / "test.ndb", "Eicar-Signature:0:*:" + hex(eicar()) + "\n");
    write_text(dir / "clamd.conf", "LocalSocket " + (dir / "clamd.sock").string() +
                                       "\nForeground yes\nDatabaseDirectory " + dir.string() + "\nLogFile " +
                                       (dir / "clamd.log").string() + "\nPidFile " +
                                       (dir / "clamd.pid").string() + "\n");
    const auto started = clamd_.start({kClamd, "-c", (dir / "clamd.conf").string()}, dir / "clamd.out", [&] {
      return fs::exists(dir / "clamd.sock") && clamd_pings(dir / "clamd.sock");
    });
    ASSERT_TRUE(started) << started.error();
    std::cout << "[ clamd    ] ready (PING answered) " << clamd_.start_time().count() << " ms after fork\n";
    RecordProperty("clamd_start_ms", static_cast<int>(clamd_.start_time().count()));
  }
  void TearDown() override {
    milter_.stop();
    clamd_.stop();
  }

  // Starts clamav-milter on `socket` ("unix:/path" or "inet:port@127.0.0.1")
  // with the given OnInfected action; true when it negotiates.
  ::testing::AssertionResult start_milter(const std::string& on_infected, const std::string& socket,
                                          const MilterEndpoint& endpoint) {
    const fs::path dir = dir_.path();
    write_text(dir / "clamav-milter.conf",
               "MilterSocket " + socket + "\nFixStaleSocket yes\nForeground yes\nPidFile " +
                   (dir / "clamav-milter.pid").string() +
                   "\nClamdSocket unix:" + (dir / "clamd.sock").string() + "\nTemporaryDirectory " +
                   dir.string() + "\nOnClean Accept\nOnInfected " + on_infected +
                   "\nOnFail Defer\nRejectMsg Virus found: %v\nAddHeader Replace\nReportHostname mx-test\n"
                   "LogFile " +
                   (dir / "clamav-milter.log").string() + "\nLogInfected Basic\n");
    const auto started =
        milter_.start({kClamavMilter, "-c", (dir / "clamav-milter.conf").string()}, dir / "clamav-milter.out",
                      [&] { return milter_negotiates(endpoint); });
    if (!started) return ::testing::AssertionFailure() << started.error();
    std::cout << "[ clamav-milter ] ready (SMFIC_OPTNEG answered) " << milter_.start_time().count()
              << " ms after fork\n";
    RecordProperty("clamav_milter_start_ms", static_cast<int>(milter_.start_time().count()));
    return ::testing::AssertionSuccess();
  }

  MilterEndpoint endpoint() const { return unix_endpoint(dir_.path() / "clamav-milter.sock"); }
  std::string socket_spec() const { return "unix:" + endpoint().path; }

  static std::string clean_message() {
    return "From: Alice <alice@example.com>\r\n"
           "To: bob@example.org\r\n"
           "Subject: clean\r\n"
           "\r\n"
           "Nothing to see here.\r\n";
  }
  // EICAR as an attachment (base64), after 100 000 bytes of text: clamd
  // decodes the MIME part; our body goes out in two SMFIC_BODY chunks.
  static std::string infected_message() {
    std::string text;
    for (int i = 0; text.size() < 100000; ++i) text += "line " + std::to_string(i) + " of harmless text\r\n";
    return "From: Alice <alice@example.com>\r\n"
           "To: bob@example.org\r\n"
           "Subject: infected\r\n"
           "MIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
           "\r\n"
           "--b1\r\n"
           "Content-Type: text/plain\r\n"
           "\r\n" +
           text +
           "--b1\r\n"
           "Content-Type: application/octet-stream; name=\"eicar.com\"\r\n"
           "Content-Transfer-Encoding: base64\r\n"
           "Content-Disposition: attachment; filename=\"eicar.com\"\r\n"
           "\r\n" +
           base64(eicar()) +
           "\r\n"
           "--b1--\r\n";
  }
  static std::string base64(std::string_view in) {
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (std::size_t i = 0; i < in.size(); i += 3) {
      const std::size_t n = std::min<std::size_t>(3, in.size() - i);
      std::uint32_t v = 0;
      for (std::size_t k = 0; k < 3; ++k) v = (v << 8) | (k < n ? static_cast<unsigned char>(in[i + k]) : 0);
      for (std::size_t k = 0; k < 4; ++k) out += k <= n ? kAlphabet[(v >> (18 - 6 * k)) & 63] : '=';
    }
    return out;
  }

  test_support::TempDir dir_{"milter"};
  Daemon clamd_{"clamd", kStopGrace};
  Daemon milter_{"clamav-milter", kStopGrace};  // stopped before clamd, both before dir_ is removed
  asio::io_context io_;
};

TEST_F(ClamavMilterTest, CleanMessageIsAcceptedWithItsHeaders) {
  ASSERT_TRUE(start_milter("Reject", socket_spec(), endpoint()));
  const MilterMessage m = message(clean_message());
  const auto start = Clock::now();
  auto result = milter(io_, endpoint(), m);
  std::cout << "[ clamav-milter ] clean message took " << ms_since(start) << " ms\n";
  ASSERT_TRUE(result) << result.error();
  EXPECT_EQ(result->action, MilterResult::Action::accept);
  EXPECT_EQ(result->reply, "");
  EXPECT_TRUE(result->notes.empty());
  ASSERT_EQ(result->header_changes.size(), 2u);
  EXPECT_EQ(result->header_changes[0].kind, HeaderChange::Kind::add);
  EXPECT_TRUE(value_of(*result, "X-Virus-Scanned").starts_with(" clamav-milter "))
      << value_of(*result, "X-Virus-Scanned");
  EXPECT_TRUE(value_of(*result, "X-Virus-Scanned").ends_with(" at mx-test"));
  EXPECT_EQ(value_of(*result, "X-Virus-Status"), " Clean");
  const std::string delivered = apply_header_changes(m.content, result->header_changes);
  EXPECT_EQ(delivered,
            "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: clean\r\n"
            "X-Virus-Scanned:" +
                value_of(*result, "X-Virus-Scanned") +
                "\r\n"
                "X-Virus-Status: Clean\r\n\r\nNothing to see here.\r\n");
}

TEST_F(ClamavMilterTest, ForgedVirusHeadersAreReplaced) {
  // AddHeader Replace: clamav-milter deletes every X-Virus-* field it saw
  // (SMFIR_CHGHEADER with an empty value, highest index first), then adds its own.
  ASSERT_TRUE(start_milter("Reject", socket_spec(), endpoint()));
  const MilterMessage m = message(
      "From: alice@example.com\r\nX-Virus-Status: Clean (forged)\r\nX-Virus-Scanned: forged\r\n"
      "x-virus-status: second\r\nSubject: hi\r\n\r\nbody\r\n");
  auto result = milter(io_, endpoint(), m);
  ASSERT_TRUE(result) << result.error();
  EXPECT_EQ(result->action, MilterResult::Action::accept);
  std::size_t changes = 0;
  for (const HeaderChange& change : result->header_changes)
    changes += change.kind == HeaderChange::Kind::change;
  EXPECT_EQ(changes, 3u);
  EXPECT_EQ(apply_header_changes(m.content, result->header_changes),
            "From: alice@example.com\r\nSubject: hi\r\nX-Virus-Scanned:" +
                value_of(*result, "X-Virus-Scanned") + "\r\nX-Virus-Status: Clean\r\n\r\nbody\r\n");
}

TEST_F(ClamavMilterTest, EicarIsRejectedWithTheConfiguredReply) {
  ASSERT_TRUE(start_milter("Reject", socket_spec(), endpoint()));
  const auto start = Clock::now();
  auto result = milter(io_, endpoint(), message(infected_message()));
  std::cout << "[ clamav-milter ] infected message of 100 KB took " << ms_since(start) << " ms\n";
  ASSERT_TRUE(result) << result.error();
  EXPECT_EQ(result->action, MilterResult::Action::reject);
  EXPECT_EQ(result->reply, "550 5.7.1 Virus found: Eicar-Signature.UNOFFICIAL");
  EXPECT_EQ(value_of(*result, "X-Virus-Status"), " Infected (Eicar-Signature.UNOFFICIAL)");
}

TEST_F(ClamavMilterTest, EicarIsQuarantinedWhenConfiguredSoOverTcp) {
  const std::uint16_t port = free_tcp_port();
  auto endpoint = parse_milter_endpoint("inet:" + std::to_string(port) + "@127.0.0.1");
  ASSERT_TRUE(endpoint) << endpoint.error();
  ASSERT_TRUE(start_milter("Quarantine", "inet:" + std::to_string(port) + "@127.0.0.1", *endpoint));
  auto result = milter(io_, *endpoint, message(infected_message()));
  ASSERT_TRUE(result) << result.error();
  EXPECT_EQ(result->action, MilterResult::Action::quarantine);
  EXPECT_EQ(result->quarantine_reason, "quarantined by clamav-milter");
  EXPECT_EQ(value_of(*result, "X-Virus-Status"), " Infected (Eicar-Signature.UNOFFICIAL)");
  // The same daemon, a clean message.
  result = milter(io_, *endpoint, message(clean_message()));
  ASSERT_TRUE(result) << result.error();
  EXPECT_EQ(result->action, MilterResult::Action::accept);
}

TEST_F(ClamavMilterTest, ManyConcurrentConversations) {
  ASSERT_TRUE(start_milter("Reject", socket_spec(), endpoint()));
  constexpr int kRuns = 10;
  std::vector<MilterMessage> messages;
  for (int i = 0; i < kRuns; ++i)
    messages.push_back(message(i % 2 == 0 ? infected_message() : clean_message()));
  std::vector<std::optional<Result<MilterResult>>> results(kRuns);
  const MilterEndpoint where = endpoint();
  int finished = 0;
  bool threw = false;
  const auto start = Clock::now();
  for (int i = 0; i < kRuns; ++i) {
    asio::co_spawn(
        io_,
        [&, i]() -> asio::awaitable<void> {
          results[i].emplace(co_await run_milter(where, messages[i], kMilterTimeout));
          ++finished;
        },
        [&](std::exception_ptr e) { threw = threw || e != nullptr; });
  }
  io_.run_for(60s);
  EXPECT_FALSE(threw);
  ASSERT_EQ(finished, kRuns);
  for (int i = 0; i < kRuns; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(*results[i]) << results[i]->error();
    EXPECT_EQ((*results[i])->action,
              i % 2 == 0 ? MilterResult::Action::reject : MilterResult::Action::accept);
  }
  std::cout << "[ clamav-milter ] " << kRuns << " concurrent conversations took " << ms_since(start)
            << " ms\n";
}

// ---------------------------------------------------------------------------
// opendkim: signing through us, verified by opendkim itself

class OpendkimTest : public testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kOpendkim) || !fs::exists(kOpendkimGenkey)) GTEST_SKIP() << "opendkim is not installed";
    const fs::path dir = dir_.path();
    const auto genkey =
        run_command({kOpendkimGenkey, "-D", dir.string(), "-d", "example.com", "-s", "test", "-b", "1024"},
                    dir / "genkey.out");
    ASSERT_EQ(genkey.status, 0) << genkey.output;
    // test.txt holds the TXT record in zone-file form; TestPublicKeys wants
    // "name value" lines.
    std::string record;
    bool quoted = false;
    for (const char c : read_text(dir / "test.txt")) {
      if (c == '"') {
        quoted = !quoted;
      } else if (quoted) {
        record += c;
      }
    }
    ASSERT_NE(record.find("p="), std::string::npos) << read_text(dir / "test.txt");
    key_record_ = record;
    write_text(dir / "keys", "test._domainkey.example.com " + record + "\n");
    write_text(dir / "opendkim.conf",
               "Mode sv\nDomain example.com\nSelector test\nKeyFile " + (dir / "test.private").string() +
                   "\nSocket local:" + (dir / "opendkim.sock").string() + "\nBackground no\nPidFile " +
                   (dir / "opendkim.pid").string() +
                   "\nSyslog no\nAuthservID mx.test\nAlwaysAddARHeader yes\nTestPublicKeys " +
                   (dir / "keys").string() +
                   "\nInternalHosts 127.0.0.1\nRequireSafeKeys no\nCanonicalization simple/simple\n");
    const auto started = opendkim_.start({kOpendkim, "-x", (dir / "opendkim.conf").string()},
                                         dir / "opendkim.out", [&] { return milter_negotiates(endpoint()); });
    ASSERT_TRUE(started) << started.error();
    std::cout << "[ opendkim ] ready (SMFIC_OPTNEG answered) " << opendkim_.start_time().count()
              << " ms after fork\n";
    RecordProperty("opendkim_start_ms", static_cast<int>(opendkim_.start_time().count()));
  }
  void TearDown() override { opendkim_.stop(); }

  MilterEndpoint endpoint() const { return unix_endpoint(dir_.path() / "opendkim.sock"); }

  // mxgate's own verifier on the bytes we produced.
  sender_auth::DkimVerdict verify_bytes(const std::string& content,
                                        const std::string& signature_value) const {
    return sender_auth::verify_with_key(content, signature_value, key_record_,
                                        std::chrono::system_clock::now());
  }

  // Folded fields, a field with two spaces after the colon, a tab, a body of
  // two SMFIC_BODY chunks with trailing white space: simple/simple
  // canonicalization fails on any byte we change.
  static std::string message_text() {
    std::string body;
    for (int i = 0; body.size() < 100000; ++i)
      body += "line " + std::to_string(i) + "  with\ttabs and spaces  \r\n";
    return "From: Alice <alice@example.com>\r\n"
           "To: bob@example.org,\r\n"
           "\tcarol@example.org\r\n"
           "Subject:  a subject that is\r\n"
           " folded over two lines\r\n"
           "Date: Sun, 06 Dec 2026 08:00:00 +0000\r\n"
           "Message-ID: <1@example.com>\r\n"
           "\r\n" +
           body;
  }

  test_support::TempDir dir_{"milter-dkim"};
  std::string key_record_;
  Daemon opendkim_{"opendkim", kStopGrace};
  asio::io_context io_;
};

TEST_F(OpendkimTest, SignedThroughUsAndVerifiedByOpendkim) {
  // From 127.0.0.1 (InternalHosts) with a From in example.com: signed.
  const MilterMessage unsigned_message = message(message_text(), "127.0.0.1");
  auto start = Clock::now();
  auto result = milter(io_, endpoint(), unsigned_message);
  std::cout << "[ opendkim ] signing 100 KB took " << ms_since(start) << " ms\n";
  ASSERT_TRUE(result) << result.error();
  EXPECT_EQ(result->action, MilterResult::Action::accept);
  ASSERT_EQ(result->header_changes.size(), 1u);
  const HeaderChange signature = result->header_changes[0];  // a copy: result is reused
  EXPECT_EQ(signature.kind, HeaderChange::Kind::insert);
  EXPECT_EQ(signature.index, 0u);
  EXPECT_EQ(signature.name, "DKIM-Signature");
  EXPECT_TRUE(signature.value.starts_with(" v=1; a=rsa-sha256; c=simple/simple; d=example.com; s=test;"))
      << signature.value;
  EXPECT_NE(signature.value.find("\r\n\t"), std::string::npos) << "folded with CRLF";
  const std::string signed_content = apply_header_changes(unsigned_message.content, result->header_changes);
  ASSERT_TRUE(signed_content.starts_with("DKIM-Signature: v=1;"));
  ASSERT_TRUE(signed_content.ends_with(unsigned_message.content));

  // An independent reader of the bytes.
  auto verdict = verify_bytes(signed_content, signature.value);
  EXPECT_EQ(verdict.result, sender_auth::DkimResult::pass) << verdict.reason;

  // The daemon verifying through us (from outside: not an internal host).
  start = Clock::now();
  result = milter(io_, endpoint(), message(signed_content));
  std::cout << "[ opendkim ] verifying 100 KB took " << ms_since(start) << " ms\n";
  ASSERT_TRUE(result) << result.error();
  EXPECT_EQ(result->action, MilterResult::Action::accept);
  ASSERT_EQ(result->header_changes.size(), 1u);
  EXPECT_EQ(result->header_changes[0].name, "Authentication-Results");
  EXPECT_NE(result->header_changes[0].value.find("mx.test;"), std::string::npos)
      << result->header_changes[0].value;
  EXPECT_NE(result->header_changes[0].value.find("dkim=pass"), std::string::npos)
      << result->header_changes[0].value;

  // One byte of the body changed: fail.
  std::string tampered = signed_content;
  tampered[tampered.size() - 10] = 'X';
  result = milter(io_, endpoint(), message(tampered));
  ASSERT_TRUE(result) << result.error();
  ASSERT_EQ(result->header_changes.size(), 1u);
  EXPECT_NE(result->header_changes[0].value.find("dkim=fail"), std::string::npos)
      << result->header_changes[0].value;
  verdict = verify_bytes(tampered, signature.value);
  EXPECT_EQ(verdict.result, sender_auth::DkimResult::fail) << verdict.reason;
}

TEST_F(OpendkimTest, UnsignedMailFromOutsideGetsDkimNone) {
  const MilterMessage m = message("From: someone@example.net\r\nSubject: hi\r\n\r\nhello\r\n");
  auto result = milter(io_, endpoint(), m);
  ASSERT_TRUE(result) << result.error();
  EXPECT_EQ(result->action, MilterResult::Action::accept);
  ASSERT_EQ(result->header_changes.size(), 1u);
  EXPECT_EQ(result->header_changes[0].kind, HeaderChange::Kind::insert);
  EXPECT_EQ(result->header_changes[0].value, " mx.test; dkim=none; dkim-atps=neutral");
  EXPECT_EQ(apply_header_changes(m.content, result->header_changes),
            "Authentication-Results: mx.test; dkim=none; dkim-atps=neutral\r\n" + m.content);
}

// ---------------------------------------------------------------------------
// Misbehaving milters

// A Unix-socket milter that negotiates (wanting only SMFIC_BODYEOB) and then
// misbehaves at the end of the message, or earlier.
class FakeMilter {
 public:
  enum class Behaviour {
    silent,                // reads everything, never answers, not even SMFIC_OPTNEG
    hang_up,               // closes right after accepting
    garbage,               // answers SMFIC_OPTNEG with an unknown reply
    progress_then_accept,  // at SMFIC_BODYEOB: SMFIR_PROGRESS every 100 ms for 900 ms, then SMFIR_ACCEPT
    progress_forever,      // at SMFIC_BODYEOB: SMFIR_PROGRESS every 50 ms
  };

  FakeMilter(asio::io_context& io, const fs::path& path, Behaviour behaviour)
      : server_(io, path, [behaviour](Socket socket) { return handle(std::move(socket), behaviour); }) {}
  int accepted() const { return server_.accepted(); }

 private:
  using Socket = test_support::LocalServer::Socket;

  static asio::awaitable<void> handle(Socket socket, Behaviour behaviour) {
    if (behaviour == Behaviour::hang_up) co_return;
    asio::error_code ec;
    PacketDecoder decoder;
    std::array<char, 4096> buffer{};
    while (!ec) {
      const std::size_t n = co_await socket.async_read_some(asio::buffer(buffer),
                                                            asio::redirect_error(asio::use_awaitable, ec));
      std::string_view bytes(buffer.data(), n);
      while (!bytes.empty() && decoder.state() == PacketDecoder::State::need_more) {
        bytes.remove_prefix(decoder.feed(bytes));
        if (decoder.state() != PacketDecoder::State::packet) break;
        const Packet packet = decoder.take();
        std::string reply;
        if (behaviour == Behaviour::silent) continue;
        if (packet.command == 'O') {
          if (behaviour == Behaviour::garbage) {
            reply = encode_packet('z', "");
          } else {
            const std::uint32_t everything_but_the_end =
                smfip::kNoConnect | smfip::kNoHelo | smfip::kNoMail | smfip::kNoRecipient | smfip::kNoData |
                smfip::kNoHeaders | smfip::kNoEndOfHeaders | smfip::kNoBody;
            std::string data;
            for (const std::uint32_t v : {6u, 0u, everything_but_the_end})
              data += std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                                  static_cast<char>(v >> 8), static_cast<char>(v)};
            reply = encode_packet('O', data);
          }
        } else if (packet.command == 'E') {
          asio::steady_timer timer(socket.get_executor());
          const auto step = behaviour == Behaviour::progress_forever ? 50ms : 100ms;
          for (int i = 0; behaviour == Behaviour::progress_forever || i < 9; ++i) {
            timer.expires_after(step);
            co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
            co_await asio::async_write(socket, asio::buffer(encode_packet('p', "")),
                                       asio::redirect_error(asio::use_awaitable, ec));
            if (ec) co_return;
          }
          reply = encode_packet('a', "");
        }
        if (!reply.empty())
          co_await asio::async_write(socket, asio::buffer(reply),
                                     asio::redirect_error(asio::use_awaitable, ec));
      }
    }
  }

  test_support::LocalServer server_;
};

class MisbehavingMilterTest : public testing::Test {
 protected:
  MilterEndpoint fake(FakeMilter::Behaviour behaviour) {
    const fs::path path = dir_.path() / ("fake" + std::to_string(fakes_.size()) + ".sock");
    fakes_.push_back(std::make_unique<FakeMilter>(io_, path, behaviour));
    return unix_endpoint(path);
  }
  test_support::TempDir dir_{"milter-fake"};
  asio::io_context io_;
  std::vector<std::unique_ptr<FakeMilter>> fakes_;
  MilterMessage message_ = message("Subject: x\r\n\r\nbody\r\n");
};

TEST_F(MisbehavingMilterTest, SilentMilterTimesOut) {
  const MilterEndpoint endpoint = fake(FakeMilter::Behaviour::silent);
  const auto start = Clock::now();
  auto result = milter(io_, endpoint, message_, 300ms);
  const auto elapsed = ms_since(start);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error(), "milter unix:" + endpoint.path +
                                " timed out after 300 ms while waiting for the reply to SMFIC_OPTNEG");
  EXPECT_GE(elapsed, 290);
  EXPECT_LT(elapsed, 3000);
}

TEST_F(MisbehavingMilterTest, ProgressExtendsTheDeadline) {
  const MilterEndpoint endpoint = fake(FakeMilter::Behaviour::progress_then_accept);
  const auto start = Clock::now();
  auto result = milter(io_, endpoint, message_, 300ms);
  const auto elapsed = ms_since(start);
  ASSERT_TRUE(result) << result.error();
  EXPECT_EQ(result->action, MilterResult::Action::accept);
  EXPECT_GE(elapsed, 850);  // well past 300 ms
}

TEST_F(MisbehavingMilterTest, ProgressCannotExtendForever) {
  const MilterEndpoint endpoint = fake(FakeMilter::Behaviour::progress_forever);
  const auto start = Clock::now();
  auto result = milter(io_, endpoint, message_, 100ms);
  const auto elapsed = ms_since(start);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error(), "milter unix:" + endpoint.path +
                                " timed out after 100 ms while waiting for the reply to SMFIC_BODYEOB");
  EXPECT_GE(elapsed, 100 * kMaxTimeoutsWithProgress - 10);
  EXPECT_LT(elapsed, 3000);
}

TEST_F(MisbehavingMilterTest, HangUpAndGarbageAreClearErrors) {
  MilterEndpoint endpoint = fake(FakeMilter::Behaviour::hang_up);
  auto result = milter(io_, endpoint, message_, 2000ms);
  ASSERT_FALSE(result);
  EXPECT_TRUE(result.error() ==
                  "milter unix:" + endpoint.path + ": connection closed before the reply to SMFIC_OPTNEG" ||
              result.error().starts_with("milter unix:" + endpoint.path + ": sending failed: ") ||
              result.error().starts_with("milter unix:" + endpoint.path + ": reading failed: "))
      << result.error();
  endpoint = fake(FakeMilter::Behaviour::garbage);
  result = milter(io_, endpoint, message_, 2000ms);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error(),
            "milter unix:" + endpoint.path + ": bad reply to SMFIC_OPTNEG: unknown reply 0x7a");
}

TEST_F(MisbehavingMilterTest, NothingListeningFailsFast) {
  const MilterEndpoint missing = unix_endpoint(dir_.path() / "missing.sock");
  auto start = Clock::now();
  auto result = milter(io_, missing, message_, 5000ms);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error(), "connect to milter unix:" + missing.path + " failed: No such file or directory");
  EXPECT_LT(ms_since(start), 1000);

  const std::uint16_t port = free_tcp_port();
  start = Clock::now();
  result = milter(io_, MilterEndpoint{MilterEndpoint::Kind::tcp, "", "127.0.0.1", port}, message_, 5000ms);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error(),
            "connect to milter inet:" + std::to_string(port) + "@127.0.0.1 failed: Connection refused");
  EXPECT_LT(ms_since(start), 1000);

  result = milter(io_, unix_endpoint("/" + std::string(200, 'p')), message_);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().find("bad socket path"), std::string::npos) << result.error();
  result = milter(io_, MilterEndpoint{MilterEndpoint::Kind::tcp, "", "localhost", 25}, message_);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().find("not an IP address and port"), std::string::npos) << result.error();
}

TEST_F(MisbehavingMilterTest, ZeroTimeoutExpiresAtOnce) {
  const MilterEndpoint endpoint = fake(FakeMilter::Behaviour::silent);
  const auto start = Clock::now();
  auto result = milter(io_, endpoint, message_, 0ms);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().find("timed out after 0 ms"), std::string::npos) << result.error();
  EXPECT_LT(ms_since(start), 1000);
}

// ---------------------------------------------------------------------------
// Endpoints

TEST(MilterEndpoints, ParseAndPrint) {
  const struct {
    const char* text;
    MilterEndpoint::Kind kind;
    const char* path_or_host;
    std::uint16_t port;
    const char* printed;
  } cases[] = {
      {"unix:/run/milter.sock", MilterEndpoint::Kind::unix_socket, "/run/milter.sock", 0,
       "unix:/run/milter.sock"},
      {"local:/run/m.sock", MilterEndpoint::Kind::unix_socket, "/run/m.sock", 0, "unix:/run/m.sock"},
      {"inet:11332@127.0.0.1", MilterEndpoint::Kind::tcp, "127.0.0.1", 11332, "inet:11332@127.0.0.1"},
      {"inet:11332@localhost", MilterEndpoint::Kind::tcp, "127.0.0.1", 11332, "inet:11332@127.0.0.1"},
      {"inet6:8891@::1", MilterEndpoint::Kind::tcp, "::1", 8891, "inet6:8891@::1"},
      {"inet6:8891@[2001:db8::1]", MilterEndpoint::Kind::tcp, "2001:db8::1", 8891, "inet6:8891@2001:db8::1"},
      {"inet6:8891@localhost", MilterEndpoint::Kind::tcp, "::1", 8891, "inet6:8891@::1"},
      {"inet:127.0.0.1:11332", MilterEndpoint::Kind::tcp, "127.0.0.1", 11332, "inet:11332@127.0.0.1"},
      {"inet:localhost:11332", MilterEndpoint::Kind::tcp, "127.0.0.1", 11332, "inet:11332@127.0.0.1"},
      {"inet:[::1]:11332", MilterEndpoint::Kind::tcp, "::1", 11332, "inet6:11332@::1"},
      {"tcp:192.0.2.7:1", MilterEndpoint::Kind::tcp, "192.0.2.7", 1, "inet:1@192.0.2.7"},
      {"tcp:[::1]:65535", MilterEndpoint::Kind::tcp, "::1", 65535, "inet6:65535@::1"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    auto parsed = parse_milter_endpoint(c.text);
    ASSERT_TRUE(parsed) << parsed.error();
    EXPECT_EQ(parsed->kind, c.kind);
    EXPECT_EQ(c.kind == MilterEndpoint::Kind::unix_socket ? parsed->path : parsed->host, c.path_or_host);
    EXPECT_EQ(parsed->port, c.port);
    EXPECT_EQ(to_string(*parsed), c.printed);
    auto again = parse_milter_endpoint(to_string(*parsed));
    ASSERT_TRUE(again) << again.error();
    EXPECT_EQ(to_string(*again), c.printed);
  }
}

TEST(MilterEndpoints, Errors) {
  const std::pair<const char*, const char*> cases[] = {
      {"",
       "milter endpoint \"\": not \"unix:/path\", \"inet:port@host\", \"inet:host:port\" or "
       "\"tcp:host:port\""},
      {"unix:", "milter endpoint \"unix:\": no socket path"},
      {"unix:relative", "milter endpoint \"unix:relative\": the socket path must be absolute"},
      {"smtp:x", "milter endpoint \"smtp:x\": unknown transport \"smtp\" (unix, local, inet, inet6 or tcp)"},
      {"inet:11332", "milter endpoint \"inet:11332\": no port (\"port@host\" or \"host:port\")"},
      {"inet:0@127.0.0.1", "milter endpoint \"inet:0@127.0.0.1\": the port must be a number 1..65535"},
      {"inet:65536@127.0.0.1",
       "milter endpoint \"inet:65536@127.0.0.1\": the port must be a number 1..65535"},
      {"inet:x@127.0.0.1", "milter endpoint \"inet:x@127.0.0.1\": the port must be a number 1..65535"},
      {"inet:25@mail.example",
       "milter endpoint \"inet:25@mail.example\": \"mail.example\" is not an IP address (names other than "
       "localhost are not looked up)"},
      {"inet:::1:25", "milter endpoint \"inet:::1:25\": an IPv6 address must be in brackets: [::1]:port"},
      {"tcp:[::1]25", "milter endpoint \"tcp:[::1]25\": no \":port\" after the address"},
      {"tcp:[::1:25", "milter endpoint \"tcp:[::1:25\": no \"]\" after the IPv6 address"},
      {"tcp:@127.0.0.1:25",
       "milter endpoint \"tcp:@127.0.0.1:25\": \"@127.0.0.1\" is not an IP address (names "
       "other than localhost are not looked up)"},
  };
  for (const auto& [text, error] : cases) {
    SCOPED_TRACE(text);
    auto parsed = parse_milter_endpoint(text);
    ASSERT_FALSE(parsed);
    EXPECT_EQ(parsed.error(), error);
  }
  const std::string longest = "unix:/" + std::string(kMaxUnixPath - 1, 'p');
  EXPECT_TRUE(parse_milter_endpoint(longest));
  auto too_long = parse_milter_endpoint(longest + "p");
  ASSERT_FALSE(too_long);
  EXPECT_NE(too_long.error().find("longer than 107 bytes"), std::string::npos);
}

}  // namespace
}  // namespace mxgate::milter
