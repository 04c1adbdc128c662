// The clamd client (src/filter/clamd_client.hpp) against a real clamd: the
// fixture writes a clamd.conf and a signature database into a temp dir,
// starts /usr/sbin/clamd in the foreground on a Unix socket there (TCP on
// 127.0.0.1 only for the TCP test), waits until it answers PING, and always
// stops it in TearDown (SIGTERM, SIGKILL after 10 s; the child also has
// PR_SET_PDEATHSIG, so a crashed test binary leaves no clamd behind).
//
// The database: an .ndb line matching the EICAR test string anywhere in a
// stream (the string is joined from two halves at run time, so no file of the
// repository holds it) and the one .hdb line that ClamAV's own tests use for
// the clamav-testfiles package (the MD5 of its 544-byte clam.exe, which every
// file there contains or packs).  clamd reports both names with
// ".UNOFFICIAL" appended, as for any unsigned database.
//
// Servers that misbehave (accept and never answer, never read, hang up,
// answer garbage) are tiny Asio acceptors in the test.  A test is skipped when
// clamd is not installed.
#include "filter/clamd_client.hpp"

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
#include <asio/read.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"
#include "local_server.hpp"
#include "run_coroutine.hpp"
#include "temp_dir.hpp"

namespace mxgate::filter {
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
using test_support::read_text;

constexpr const char* kClamd = "/usr/sbin/clamd";
constexpr const char* kTestFiles = "/usr/share/clamav-testfiles";
constexpr std::chrono::seconds kStopTimeout{10};
constexpr std::size_t kClamdStreamMax = std::size_t{1} << 20;  // the fixture's StreamMaxLength 1M

// One clamd in the foreground, its config, database, socket and logs in dir.
class ClamdDaemon {
 public:
  struct Options {
    std::size_t stream_max_length = kClamdStreamMax;
    bool tcp = false;  // also listen on 127.0.0.1 at a port chosen free at run time
  };

  ClamdDaemon(fs::path dir, Options options) : dir_(std::move(dir)), options_(options) {}

  // Writes the files, starts clamd and waits until it answers PING.  With
  // tcp, a port taken in the meantime is retried twice.
  Result<void> start() {
    fs::create_directories(dir_);
    std::ofstream(dir_ / "test.ndb") << "Eicar-Signature:0:*:" << hex(eicar()) << "\n";
    std::ofstream(dir_ / "test.hdb") << "aa15bcf478d165efd2065190eb473bcb:544:ClamAV-Test-File\n";
    std::string failure;
    for (int attempt = 0; attempt < (options_.tcp ? 3 : 1); ++attempt) {
      if (options_.tcp) port_ = free_tcp_port();
      write_conf();
      std::error_code ignored;
      fs::remove(socket_path(), ignored);
      fs::remove(dir_ / "clamd.log", ignored);
      auto started = daemon_.start({kClamd, "-c", (dir_ / "clamd.conf").string()}, dir_ / "clamd.out",
                                   [this] { return fs::exists(socket_path()) && clamd_pings(socket_path()); });
      if (started) return started;
      failure = started.error() + read_text(dir_ / "clamd.log");
      daemon_.stop();
    }
    return make_error(failure);
  }

  void stop() { daemon_.stop(); }

  fs::path socket_path() const { return dir_ / "clamd.sock"; }
  ClamdEndpoint endpoint() const {
    return ClamdEndpoint{ClamdEndpoint::Kind::unix_socket, socket_path().string(), "", 0};
  }
  ClamdEndpoint tcp_endpoint() const {
    return ClamdEndpoint{ClamdEndpoint::Kind::tcp, "", "127.0.0.1", port_};
  }
  std::chrono::milliseconds start_time() const { return daemon_.start_time(); }
  std::string log() const { return daemon_.output() + read_text(dir_ / "clamd.log"); }

 private:
  void write_conf() {
    std::ofstream conf(dir_ / "clamd.conf", std::ios::trunc);
    conf << "LocalSocket " << socket_path().string() << "\n"
         << "Foreground yes\n"
         << "DatabaseDirectory " << dir_.string() << "\n"
         << "StreamMaxLength " << options_.stream_max_length << "\n"
         << "LogFile " << (dir_ / "clamd.log").string() << "\n"
         << "PidFile " << (dir_ / "clamd.pid").string() << "\n";
    if (options_.tcp) conf << "TCPSocket " << port_ << "\nTCPAddr 127.0.0.1\n";
  }

  fs::path dir_;
  Options options_;
  Daemon daemon_{"clamd", kStopTimeout};
  std::uint16_t port_ = 0;
};

using test_support::run;

Result<ClamdVerdict> scan(asio::io_context& io, const ClamdEndpoint& endpoint, std::string_view data,
                          ClamdScanOptions options = {}) {
  auto result = run(io, clamd_scan(endpoint, data, options));
  if (!result) return make_error("no result");
  return std::move(*result);
}

// A Unix-socket server that accepts and then misbehaves.
class FakeClamd {
 public:
  enum class Behaviour {
    read_and_stay_silent,  // reads everything, never answers
    never_read,            // reads nothing, never answers
    hang_up,               // reads the whole request, closes
    hang_up_early,         // reads the command, closes
    answer_garbage,        // reads the whole request, answers "stream: maybe\0"
  };

  FakeClamd(asio::io_context& io, const fs::path& path, Behaviour behaviour)
      : server_(io, path, [behaviour](Socket socket) { return handle(std::move(socket), behaviour); }) {}
  int accepted() const { return server_.accepted(); }

 private:
  using Socket = test_support::LocalServer::Socket;

  static asio::awaitable<void> handle(Socket socket, Behaviour behaviour) {
    asio::error_code ec;
    std::string received;
    char buffer[4096];
    switch (behaviour) {
      case Behaviour::read_and_stay_silent:
        while (!ec)
          co_await socket.async_read_some(asio::buffer(buffer),
                                          asio::redirect_error(asio::use_awaitable, ec));
        break;
      case Behaviour::never_read: {
        asio::steady_timer forever(socket.get_executor(), Clock::time_point::max());
        co_await forever.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        break;
      }
      case Behaviour::hang_up_early:
        co_await asio::async_read(socket, asio::buffer(buffer, 10),
                                  asio::redirect_error(asio::use_awaitable, ec));
        break;
      case Behaviour::hang_up:
      case Behaviour::answer_garbage:
        // A request ends with the zero-length chunk (the shortest is 14 bytes).
        while (!ec && !(received.size() >= 14 && received.ends_with(std::string(4, '\0')))) {
          const std::size_t n = co_await socket.async_read_some(
              asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
          received.append(buffer, n);
        }
        if (behaviour == Behaviour::answer_garbage)
          co_await asio::async_write(socket, asio::buffer("stream: maybe", 14),
                                     asio::redirect_error(asio::use_awaitable, ec));
        break;
    }
  }

  test_support::LocalServer server_;
};

class ClamdClientTest : public testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kClamd)) GTEST_SKIP() << kClamd << " is not installed";
    daemon_ = std::make_unique<ClamdDaemon>(dir_.path() / "clamd", ClamdDaemon::Options{});
    const auto started = daemon_->start();
    ASSERT_TRUE(started) << started.error();
    std::cout << "[ clamd    ] ready (PING answered) " << daemon_->start_time().count() << " ms after fork\n";
    RecordProperty("clamd_start_ms", static_cast<int>(daemon_->start_time().count()));
  }
  void TearDown() override {
    if (daemon_) daemon_->stop();
  }

  // Lengths around clamd's limit, clean, or with EICAR as their last bytes.
  static std::string clean(std::size_t size) { return std::string(size, 'x'); }
  static std::string infected_tail(std::size_t size) { return clean(size - eicar().size()) + eicar(); }

  test_support::TempDir dir_{"clamd"};
  std::unique_ptr<ClamdDaemon> daemon_;  // destroyed (stopped) before dir_ is removed
  asio::io_context io_;
};

void expect_found(const Result<ClamdVerdict>& verdict, std::string_view signature) {
  ASSERT_TRUE(verdict) << verdict.error();
  EXPECT_TRUE(verdict->infected);
  EXPECT_EQ(verdict->signature, signature);
}

void expect_clean(const Result<ClamdVerdict>& verdict) {
  ASSERT_TRUE(verdict) << verdict.error();
  EXPECT_FALSE(verdict->infected) << verdict->signature;
  EXPECT_EQ(verdict->signature, "");
}

void expect_error_containing(const Result<ClamdVerdict>& verdict, std::string_view part) {
  ASSERT_FALSE(verdict) << "verdict: infected=" << verdict->infected << " " << verdict->signature;
  EXPECT_NE(verdict.error().find(part), std::string::npos) << verdict.error();
}

TEST_F(ClamdClientTest, Ping) {
  const auto pong = run(io_, clamd_ping(daemon_->endpoint(), 5000ms));
  ASSERT_TRUE(pong);
  EXPECT_TRUE(*pong) << pong->error();
}

TEST_F(ClamdClientTest, EicarIsFound) {
  expect_found(scan(io_, daemon_->endpoint(), eicar()), "Eicar-Signature.UNOFFICIAL");
}

TEST_F(ClamdClientTest, EicarInsideOtherBytesAndAcrossChunksIsFound) {
  const std::string data = clean(1000) + eicar() + clean(1000);
  ClamdScanOptions options;
  options.chunk_size = 7;  // the string arrives in ten chunks
  expect_found(scan(io_, daemon_->endpoint(), data, options), "Eicar-Signature.UNOFFICIAL");
}

TEST_F(ClamdClientTest, CleanDataIsOk) {
  expect_clean(scan(io_, daemon_->endpoint(), "Subject: hello\r\n\r\nJust a message.\r\n"));
  // EICAR less its last byte is not EICAR.
  const std::string almost = eicar().substr(0, eicar().size() - 1);
  expect_clean(scan(io_, daemon_->endpoint(), almost));
}

TEST_F(ClamdClientTest, EmptyObjectIsOk) { expect_clean(scan(io_, daemon_->endpoint(), "")); }

TEST_F(ClamdClientTest, ClamavTestFilesAreFound) {
  for (const char* name : {"clam.exe", "clam.zip", "clam.mail"}) {
    const fs::path path = fs::path(kTestFiles) / name;
    if (!fs::exists(path)) GTEST_SKIP() << path << " missing (package clamav-testfiles)";
    SCOPED_TRACE(name);
    expect_found(scan(io_, daemon_->endpoint(), read_text(path)), "ClamAV-Test-File.UNOFFICIAL");
  }
}

TEST_F(ClamdClientTest, ExactlyMaxStreamIsSentWhole) {
  ClamdScanOptions options;
  options.max_stream = kClamdStreamMax;  // equal to clamd's StreamMaxLength
  expect_clean(scan(io_, daemon_->endpoint(), clean(kClamdStreamMax), options));
  // The last bytes arrive: EICAR at the very end is found.
  expect_found(scan(io_, daemon_->endpoint(), infected_tail(kClamdStreamMax), options),
               "Eicar-Signature.UNOFFICIAL");
}

TEST_F(ClamdClientTest, OneByteOverMaxStreamIsRefusedWithoutConnecting) {
  ClamdScanOptions options;
  options.max_stream = kClamdStreamMax;
  const std::string data = infected_tail(kClamdStreamMax + 1);
  const auto start = Clock::now();
  const auto verdict = scan(io_, daemon_->endpoint(), data, options);
  expect_error_containing(verdict, "larger than the clamd stream limit");
  EXPECT_EQ(verdict.error(),
            "object of 1048577 bytes is larger than the clamd stream limit (max_stream 1048576 bytes); "
            "not scanned");
  // Had it connected, a dead path would have answered a connect error.
  const ClamdEndpoint dead{ClamdEndpoint::Kind::unix_socket, (dir_.path() / "nobody.sock").string(), "", 0};
  expect_error_containing(scan(io_, dead, data, options), "larger than the clamd stream limit");
  EXPECT_LT(ms_since(start), 1000);
}

TEST_F(ClamdClientTest, ClamdLimitBelowOursIsAnError) {
  ClamdScanOptions options;
  options.max_stream = 8 * kClamdStreamMax;  // misconfigured: clamd's StreamMaxLength is 1M
  // Just over clamd's limit (the whole request may fit into the socket
  // buffers before clamd reads it), and far over (clamd hangs up mid-send).
  for (const std::size_t size : {kClamdStreamMax + 1, 2 * kClamdStreamMax, 8 * kClamdStreamMax}) {
    SCOPED_TRACE(size);
    const auto start = Clock::now();
    const auto verdict = scan(io_, daemon_->endpoint(), infected_tail(size), options);
    expect_error_containing(verdict, "clamd error: INSTREAM size limit exceeded.");
    EXPECT_EQ(verdict.error(),
              "clamd error: INSTREAM size limit exceeded. (unix:" + daemon_->socket_path().string() +
                  ": its StreamMaxLength is below this object's " + std::to_string(size) +
                  " bytes; set it to at least max_stream 8388608)");
    EXPECT_LT(ms_since(start), 10000);
  }
  // clamd is none the worse.
  expect_found(scan(io_, daemon_->endpoint(), eicar(), options), "Eicar-Signature.UNOFFICIAL");
}

TEST_F(ClamdClientTest, DeadSocketPathFailsFast) {
  const ClamdEndpoint missing{ClamdEndpoint::Kind::unix_socket, (dir_.path() / "missing.sock").string(), "",
                              0};
  auto start = Clock::now();
  auto verdict = scan(io_, missing, eicar());
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error(), "connect to clamd unix:" + missing.path + " failed: No such file or directory");
  EXPECT_LT(ms_since(start), 1000);

  // A socket file nobody listens on (a clamd that died).
  const fs::path stale = dir_.path() / "stale.sock";
  {
    asio::local::stream_protocol::acceptor gone(io_, asio::local::stream_protocol::endpoint(stale.string()));
  }
  ASSERT_TRUE(fs::exists(stale));
  start = Clock::now();
  verdict = scan(io_, ClamdEndpoint{ClamdEndpoint::Kind::unix_socket, stale.string(), "", 0}, eicar());
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error(), "connect to clamd unix:" + stale.string() + " failed: Connection refused");
  EXPECT_LT(ms_since(start), 1000);

  const auto pong = run(io_, clamd_ping(missing, 1000ms));
  ASSERT_TRUE(pong);
  EXPECT_EQ(pong->error(), "connect to clamd unix:" + missing.path + " failed: No such file or directory");
}

TEST_F(ClamdClientTest, ClosedTcpPortFailsFast) {
  const std::uint16_t port = free_tcp_port();
  const auto start = Clock::now();
  const auto verdict = scan(io_, ClamdEndpoint{ClamdEndpoint::Kind::tcp, "", "127.0.0.1", port}, eicar());
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error(),
            "connect to clamd tcp:127.0.0.1:" + std::to_string(port) + " failed: Connection refused");
  EXPECT_LT(ms_since(start), 1000);
}

TEST_F(ClamdClientTest, BadEndpointIsAnErrorNotAnException) {
  auto verdict =
      scan(io_, ClamdEndpoint{ClamdEndpoint::Kind::unix_socket, "/" + std::string(200, 'p'), "", 0}, "x");
  ASSERT_FALSE(verdict);
  EXPECT_NE(verdict.error().find("bad socket path"), std::string::npos) << verdict.error();
  verdict = scan(io_, ClamdEndpoint{ClamdEndpoint::Kind::tcp, "", "localhost", 3310}, "x");
  ASSERT_FALSE(verdict);
  EXPECT_NE(verdict.error().find("not an IP address and port"), std::string::npos) << verdict.error();
}

TEST_F(ClamdClientTest, TcpEndpointWorks) {
  ClamdDaemon tcp(dir_.path() / "tcp", ClamdDaemon::Options{kClamdStreamMax, true});
  const auto started = tcp.start();
  ASSERT_TRUE(started) << started.error();
  const ClamdEndpoint endpoint = tcp.tcp_endpoint();
  auto parsed = parse_clamd_endpoint(to_string(endpoint));
  ASSERT_TRUE(parsed) << parsed.error();
  expect_found(scan(io_, *parsed, eicar()), "Eicar-Signature.UNOFFICIAL");
  expect_clean(scan(io_, *parsed, clean(300000)));
  const auto pong = run(io_, clamd_ping(*parsed, 5000ms));
  ASSERT_TRUE(pong);
  EXPECT_TRUE(*pong) << pong->error();
  ClamdScanOptions options;
  options.max_stream = 4 * kClamdStreamMax;
  expect_error_containing(scan(io_, *parsed, clean(4 * kClamdStreamMax), options),
                          "clamd error: INSTREAM size limit exceeded.");
}

TEST_F(ClamdClientTest, SilentServerTimesOutWaitingForTheReply) {
  const fs::path path = dir_.path() / "silent.sock";
  FakeClamd fake(io_, path, FakeClamd::Behaviour::read_and_stay_silent);
  const ClamdEndpoint endpoint{ClamdEndpoint::Kind::unix_socket, path.string(), "", 0};
  ClamdScanOptions options;
  options.timeout = 300ms;
  const auto start = Clock::now();
  const auto verdict = scan(io_, endpoint, eicar(), options);
  const auto elapsed = ms_since(start);
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error(),
            "clamd unix:" + path.string() + " timed out after 300 ms while waiting for the reply");
  EXPECT_GE(elapsed, 290);
  EXPECT_LT(elapsed, 3000);
  EXPECT_EQ(fake.accepted(), 1);

  const auto pong = run(io_, clamd_ping(endpoint, 200ms));
  ASSERT_TRUE(pong);
  EXPECT_EQ(pong->error(),
            "clamd unix:" + path.string() + " timed out after 200 ms while waiting for the reply");
}

TEST_F(ClamdClientTest, ServerThatNeverReadsTimesOutWhileSending) {
  const fs::path path = dir_.path() / "stuck.sock";
  FakeClamd fake(io_, path, FakeClamd::Behaviour::never_read);
  ClamdScanOptions options;
  options.timeout = 300ms;
  const auto start = Clock::now();
  const auto verdict = scan(io_, ClamdEndpoint{ClamdEndpoint::Kind::unix_socket, path.string(), "", 0},
                            clean(8 * kClamdStreamMax), options);
  const auto elapsed = ms_since(start);
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error(), "clamd unix:" + path.string() + " timed out after 300 ms while sending");
  EXPECT_GE(elapsed, 290);
  EXPECT_LT(elapsed, 3000);
}

TEST_F(ClamdClientTest, ServerThatHangsUpIsAClearError) {
  const fs::path path = dir_.path() / "hangup.sock";
  FakeClamd fake(io_, path, FakeClamd::Behaviour::hang_up);
  const ClamdEndpoint endpoint{ClamdEndpoint::Kind::unix_socket, path.string(), "", 0};
  // It reads the whole request and closes: the read sees EOF.
  auto verdict = scan(io_, endpoint, "x");
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error(), "clamd unix:" + path.string() + ": connection closed before the reply");
  // It closes after the command: the write fails (EPIPE or ECONNRESET), and
  // there is no reply to read.
  const fs::path early_path = dir_.path() / "early.sock";
  FakeClamd early(io_, early_path, FakeClamd::Behaviour::hang_up_early);
  verdict = scan(io_, ClamdEndpoint{ClamdEndpoint::Kind::unix_socket, early_path.string(), "", 0},
                 clean(4 * kClamdStreamMax));
  ASSERT_FALSE(verdict);
  EXPECT_TRUE(verdict.error().starts_with("clamd unix:" + early_path.string() +
                                          " closed the connection while sending: "))
      << verdict.error();
}

TEST_F(ClamdClientTest, GarbageReplyIsAnError) {
  const fs::path path = dir_.path() / "garbage.sock";
  FakeClamd fake(io_, path, FakeClamd::Behaviour::answer_garbage);
  const auto verdict =
      scan(io_, ClamdEndpoint{ClamdEndpoint::Kind::unix_socket, path.string(), "", 0}, eicar());
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error(), "unexpected clamd reply: \"stream: maybe\" (unix:" + path.string() + ")");
  const auto pong =
      run(io_, clamd_ping(ClamdEndpoint{ClamdEndpoint::Kind::unix_socket, path.string(), "", 0}, 200ms));
  ASSERT_TRUE(pong);
  EXPECT_FALSE(*pong);  // the fake waits for an INSTREAM terminator a PING never sends: a timeout
}

TEST_F(ClamdClientTest, ManyConcurrentScans) {
  constexpr int kScans = 20;
  std::vector<std::string> objects;
  for (int i = 0; i < kScans; ++i)
    objects.push_back(i % 2 == 0 ? infected_tail(200000 + 1000 * i) : clean(200000 + 1000 * i));
  std::vector<std::optional<Result<ClamdVerdict>>> results(kScans);
  const ClamdEndpoint endpoint = daemon_->endpoint();
  ClamdScanOptions options;
  options.chunk_size = 16 * 1024;
  int finished = 0;
  bool threw = false;
  const auto start = Clock::now();
  for (int i = 0; i < kScans; ++i) {
    asio::co_spawn(
        io_,
        [&, i]() -> asio::awaitable<void> {
          results[i].emplace(co_await clamd_scan(endpoint, objects[i], options));
          ++finished;
        },
        [&](std::exception_ptr e) { threw = threw || e != nullptr; });
  }
  io_.run_for(60s);
  EXPECT_FALSE(threw);
  ASSERT_EQ(finished, kScans);
  for (int i = 0; i < kScans; ++i) {
    SCOPED_TRACE(i);
    if (i % 2 == 0)
      expect_found(*results[i], "Eicar-Signature.UNOFFICIAL");
    else
      expect_clean(*results[i]);
  }
  std::cout << "[ clamd    ] " << kScans << " concurrent scans of ~200 KB took " << ms_since(start)
            << " ms\n";
}

}  // namespace
}  // namespace mxgate::filter
