// smtpsink: a STARTTLS-capable SMTP sink for the benchmark harness (issue 4:
// Postfix's smtp-sink speaks no TLS).  It accepts every message on loopback,
// discards it and counts it.
//
// Contract
// - smtpsink --listen 127.0.0.1:PORT [--cert FILE --key FILE]... [--count-file PATH]
//            [--max-connections N (10000)]
//   Loopback only (127.0.0.0/8, [::1]); anything else is a usage error (exit
//   2).  PORT 0 picks a free port.  Once bound it prints
//   "listening ADDRESS:PORT" (the real port) on stdout and flushes.
// - SMTP: greets "220 smtpsink.invalid ESMTP smtpsink"; EHLO offers
//   PIPELINING, SIZE, STARTTLS (only with a certificate and before TLS),
//   8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8; every sender and recipient is
//   accepted, DATA content is read to <CRLF>.<CRLF> and thrown away, 250.
//   Replies to pipelined commands come in order, written together once the
//   input read so far is used up.  STARTTLS: 220, buffered plaintext dropped,
//   handshake, all SMTP state reset.  More than --max-connections at once:
//   421 and close.  A connection idle for 5 minutes gets 421 and is closed.
// - Counts: sessions (connections served), tls_sessions (handshakes
//   completed), messages (transactions answered 250), recipients (of those
//   messages), bytes (their content as received, after dot-unstuffing).
//   With --count-file PATH they are written as one JSON object
//     {"sessions":S,"tls_sessions":T,"messages":M,"recipients":R,"bytes":B}
//   to PATH.tmp and renamed to PATH: at start, then whenever they changed
//   (checked every 20 ms), and once more on SIGTERM or SIGINT, after which
//   the process exits 0 without waiting for open sessions.
// - Exit status: 0 after SIGTERM/SIGINT, 1 when it cannot start (bind,
//   certificates), 2 on a usage error.
//
// Reuse: the protocol is mxgate's own pure session (src/smtp/session.hpp),
// the same state machine the gateway runs, driven by a shell like
// src/server/connection.cpp whose "store" is to count and answer 250 at once
// (nothing is written anywhere).  The TLS context is tls::make_server_context
// (ECDSA and RSA side by side, server preference, resumption).  Two things
// the shell adds on top: its own greeting (the session's says "mxgate"), and
// it drops CHUNKING from the session's EHLO reply, so that Postfix relays to
// it with DATA as mxgate does, not BDAT (the session still reads BDAT from a
// client that sends it anyway).
//
// Performance: one thread, one io_context, no locks; replies are collected
// across Steps and written once per read; a message is counted without being
// copied anywhere but the session's own buffer.
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/redirect_error.hpp>
#include <asio/signal_set.hpp>
#include <asio/ssl.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <charconv>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "smtp/relay_policy.hpp"
#include "smtp/session.hpp"
#include "tls/server_context.hpp"
#include "util/result.hpp"

namespace {

namespace config = mxgate::config;
namespace smtp = mxgate::smtp;
namespace tls = mxgate::tls;
using Clock = std::chrono::steady_clock;
using mxgate::make_error;
using mxgate::Result;

constexpr std::string_view kHostname = "smtpsink.invalid";  // never anyone's myhostname
constexpr std::chrono::minutes kIdleTimeout{5};
// Bound on the final 421 to a client that no longer reads.
constexpr std::chrono::seconds kFinalWriteTimeout{10};
constexpr std::chrono::milliseconds kCountInterval{20};
// A 1 MB message arrives in a few dozen reads.
constexpr std::size_t kReadBufferSize = std::size_t{32} * 1024;

constexpr std::string_view kUsage =
    "usage: smtpsink --listen 127.0.0.1:PORT [--cert FILE --key FILE]... [--count-file PATH]\n"
    "                [--max-connections N (10000)]\n"
    "Loopback only (127.0.0.0/8, [::1]:PORT); PORT 0 picks a free port.  STARTTLS is\n"
    "offered when at least one certificate pair is given (ECDSA and RSA may be combined).\n"
    "Exit status: 0 after SIGTERM/SIGINT, 1 when it cannot start, 2 usage error.\n";

// ---------------------------------------------------------------------------
// Options (pure)

struct Options {
  asio::ip::tcp::endpoint listen;
  std::vector<config::CertificatePair> certificates;
  std::string count_file;
  std::size_t max_connections = 10000;
};

template <class T>
Result<T> parse_number(std::string_view flag, std::string_view text, T min, T max) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < min || value > max)
    return make_error(std::string(flag) + ": expected a whole number from " + std::to_string(min) + " to " +
                      std::to_string(max) + ", got \"" + std::string(text) + "\"");
  return value;
}

Result<asio::ip::tcp::endpoint> parse_listen(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return make_error("--listen: expected [IPV6]:PORT, got \"" + std::string(text) + "\"");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return make_error("--listen: expected ADDRESS:PORT, got \"" + std::string(text) + "\"");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto port_number = parse_number<unsigned>("--listen port", port, 0, 65535);
  if (!port_number) return make_error(port_number.error());
  if (host == "localhost") host = "127.0.0.1";
  asio::error_code ec;
  auto address = asio::ip::make_address(std::string(host), ec);
  if (ec) return make_error("--listen: \"" + std::string(host) + "\" is not a numeric address or localhost");
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  const bool loopback =
      address.is_v4() ? (address.to_v4().to_uint() >> 24) == 127 : address.to_v6() == asio::ip::address_v6::loopback();
  if (!loopback)
    return make_error("--listen: refusing " + address.to_string() +
                      ": smtpsink only listens on loopback (127.0.0.0/8, ::1)");
  return asio::ip::tcp::endpoint(address, static_cast<unsigned short>(*port_number));
}

Result<Options> parse_options(const std::vector<std::string_view>& args) {
  Options o;
  bool have_listen = false;
  std::vector<std::string> certs;
  std::vector<std::string> keys;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view flag = args[i];
    std::optional<std::string_view> inline_value;
    if (const auto eq = flag.find('='); flag.starts_with("--") && eq != std::string_view::npos) {
      inline_value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    static constexpr std::string_view kValued[] = {"--listen", "--cert", "--key", "--count-file",
                                                   "--max-connections"};
    if (std::find(std::begin(kValued), std::end(kValued), flag) == std::end(kValued))
      return make_error("unknown option \"" + std::string(flag) + "\"");
    std::string_view value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i + 1 >= args.size()) return make_error(std::string(flag) + ": missing value");
      value = args[++i];
    }
    if (flag == "--listen") {
      auto listen = parse_listen(value);
      if (!listen) return make_error(listen.error());
      o.listen = *listen;
      have_listen = true;
    } else if (flag == "--cert" || flag == "--key") {
      if (value.empty()) return make_error(std::string(flag) + ": empty file name");
      (flag == "--cert" ? certs : keys).emplace_back(value);
    } else if (flag == "--count-file") {
      if (value.empty()) return make_error("--count-file: empty file name");
      o.count_file = std::string(value);
    } else if (flag == "--max-connections") {
      auto n = parse_number<std::size_t>(flag, value, 1, 1000000);
      if (!n) return make_error(n.error());
      o.max_connections = *n;
    }
  }
  if (!have_listen) return make_error("--listen is required");
  if (certs.size() != keys.size())
    return make_error("--cert and --key come in pairs: got " + std::to_string(certs.size()) + " --cert and " +
                      std::to_string(keys.size()) + " --key");
  for (std::size_t i = 0; i < certs.size(); ++i) o.certificates.push_back({certs[i], keys[i]});
  return o;
}

// ---------------------------------------------------------------------------
// Counts (pure)

struct Counts {
  std::uint64_t sessions = 0;
  std::uint64_t tls_sessions = 0;
  std::uint64_t messages = 0;
  std::uint64_t recipients = 0;
  std::uint64_t bytes = 0;
  std::uint64_t version = 0;  // bumped on every change; not written
};

std::string counts_json(const Counts& c) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"sessions\":%llu,\"tls_sessions\":%llu,\"messages\":%llu,\"recipients\":%llu,\"bytes\":%llu}\n",
                static_cast<unsigned long long>(c.sessions), static_cast<unsigned long long>(c.tls_sessions),
                static_cast<unsigned long long>(c.messages), static_cast<unsigned long long>(c.recipients),
                static_cast<unsigned long long>(c.bytes));
  return buf;
}

// PATH.tmp, then rename: a reader sees the old object or the new one.
Result<void> write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return make_error(tmp + ": " + std::strerror(errno));
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !written) return make_error(tmp + ": write failed");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return make_error(path + ": " + std::strerror(errno));
  return {};
}

// The session puts its own Received header in front of the content: one
// "Received:" line and its tab-indented continuation lines.
std::size_t received_header_size(std::string_view content) {
  if (!content.starts_with("Received:")) return 0;
  std::size_t pos = 0;
  do {
    const auto crlf = content.find("\r\n", pos);
    if (crlf == std::string_view::npos) return 0;
    pos = crlf + 2;
  } while (pos < content.size() && content[pos] == '\t');
  return pos;
}

// The session's EHLO reply ends "250-SMTPUTF8", "250 CHUNKING"; the sink
// does not offer CHUNKING (see the top of the file).
void drop_chunking(std::string& output) {
  static constexpr std::string_view kTail = "250-SMTPUTF8\r\n250 CHUNKING\r\n";
  static constexpr std::string_view kNewTail = "250 SMTPUTF8\r\n";
  for (auto pos = output.find(kTail); pos != std::string::npos; pos = output.find(kTail, pos))
    output.replace(pos, kTail.size(), kNewTail);
}

// ---------------------------------------------------------------------------
// The Asio shell

class Environment final : public smtp::SessionEnvironment {
 public:
  std::chrono::system_clock::time_point now() override { return std::chrono::system_clock::now(); }
  std::string new_queue_id() override {
    static constexpr char kDigits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
    std::string id = "S";
    std::uint64_t n = ++next_;
    char buf[16];
    int len = 0;
    do {
      buf[len++] = kDigits[n & 31];
      n >>= 5;
    } while (n != 0);
    while (len > 0) id += buf[--len];
    return id;
  }

 private:
  std::uint64_t next_ = 0;
};

// Everything the connections share; no Asio objects, so it outlives the
// io_context (whose destruction destroys the connections still open).
struct Shared {
  const Options& options;
  asio::ssl::context* tls = nullptr;  // null without certificates
  smtp::RelayPolicy relay;
  smtp::SessionSettings settings;
  Environment environment;
  Counts counts;
  std::size_t active = 0;
  unsigned tls_failures_logged = 0;
};

std::string address_text(const asio::ip::tcp::endpoint& endpoint) {
  auto address = endpoint.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  return address.to_string();
}

std::string endpoint_text(const asio::ip::tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  const std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(endpoint.port());
}

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(asio::ip::tcp::socket socket, Shared& shared, std::string client_ip)
      : shared_(shared),
        socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        session_(shared.settings, shared.environment, std::move(client_ip)),
        read_buffer_(new char[kReadBufferSize]) {
    ++shared_.active;
    ++shared_.counts.sessions;
    ++shared_.counts.version;
  }
  ~Connection() { --shared_.active; }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    asio::co_spawn(timer_.get_executor(), watchdog(), asio::detached);

    std::string pending = "220 ";
    pending.append(kHostname).append(" ESMTP smtpsink\r\n");
    bool open = true;
    while (open) {
      smtp::Step step = session_.advance();
      if (pending.empty()) {
        pending = std::move(step.output);
      } else {
        pending += step.output;
      }
      switch (step.next) {
        case smtp::Next::store:
          // The session wants the message stored; the sink counts it and
          // says yes.  The 250 joins the other pending replies.
          count_message();
          session_.stored(true);
          break;
        case smtp::Next::read: {
          if (!co_await flush(pending)) {
            open = false;
            break;
          }
          arm(kIdleTimeout);
          const std::size_t n = co_await read_some();
          if (n == 0) {
            if (expired_) {
              expired_ = false;
              arm(kFinalWriteTimeout);
              const std::string goodbye = session_.timed_out();
              co_await write_all(goodbye);
            } else {
              session_.disconnected();
            }
            open = false;
            break;
          }
          session_.receive(std::string_view(read_buffer_.get(), n));
          break;
        }
        case smtp::Next::start_tls:
          // The session has dropped what was buffered behind STARTTLS.
          open = co_await flush(pending) && co_await handshake();
          if (!open) session_.disconnected();
          break;
        case smtp::Next::close:
          co_await flush(pending, kFinalWriteTimeout);
          open = false;
          break;
      }
    }
    done_ = true;
    timer_.cancel();
    asio::error_code ec;
    lowest().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    lowest().close(ec);
  }

 private:
  asio::ip::tcp::socket& lowest() { return tls_ ? tls_->next_layer() : socket_; }

  void count_message() {
    Counts& c = shared_.counts;
    const std::string_view content = session_.content();
    ++c.messages;
    c.recipients += session_.envelope().recipients.size();
    c.bytes += content.size() - received_header_size(content);
    ++c.version;
  }

  // Writes the collected replies, if any, and empties the buffer.
  asio::awaitable<bool> flush(std::string& pending, Clock::duration timeout = kIdleTimeout) {
    if (pending.empty()) co_return true;
    drop_chunking(pending);
    arm(timeout);
    const bool ok = co_await write_all(pending);
    pending.clear();
    co_return ok;
  }

  asio::awaitable<bool> write_all(std::string_view bytes) {
    asio::error_code ec;
    if (tls_) {
      co_await asio::async_write(*tls_, asio::buffer(bytes), asio::redirect_error(asio::use_awaitable, ec));
    } else {
      co_await asio::async_write(socket_, asio::buffer(bytes), asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return !ec;
  }

  asio::awaitable<std::size_t> read_some() {
    asio::error_code ec;
    std::size_t n = 0;
    const auto buffer = asio::buffer(read_buffer_.get(), kReadBufferSize);
    if (tls_) {
      n = co_await tls_->async_read_some(buffer, asio::redirect_error(asio::use_awaitable, ec));
    } else {
      n = co_await socket_.async_read_some(buffer, asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return ec ? 0 : n;
  }

  asio::awaitable<bool> handshake() {
    tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket>>(std::move(socket_), *shared_.tls);
    arm(kIdleTimeout);
    asio::error_code ec;
    co_await tls_->async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      // A few for diagnosis; a benchmark does not want a line per failure.
      if (shared_.tls_failures_logged < 20) {
        ++shared_.tls_failures_logged;
        std::fprintf(stderr, "smtpsink: tls handshake failed: %s (%s)%s\n",
                     expired_ ? "timeout" : ec.message().c_str(), tls::last_error_text().c_str(),
                     shared_.tls_failures_logged == 20 ? "; not reporting further failures" : "");
      }
      co_return false;
    }
    session_.tls_established(tls::describe(tls_->native_handle()));
    ++shared_.counts.tls_sessions;
    ++shared_.counts.version;
    co_return true;
  }

  // Deadlines as in src/server/connection.cpp: arm() only moves deadline_;
  // the watchdog sleeps until the deadline it last saw and re-reads it, so a
  // busy connection costs no timer operation per read.
  void arm(Clock::duration timeout) {
    deadline_ = Clock::now() + timeout;
    if (deadline_ < armed_) timer_.cancel();
  }

  asio::awaitable<void> watchdog() {
    auto self = shared_from_this();
    while (!done_) {
      armed_ = deadline_;
      timer_.expires_at(armed_);
      asio::error_code ec;
      co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (done_) break;
      if (Clock::now() >= deadline_) {
        expired_ = true;  // the pending operation fails with operation_aborted
        deadline_ = Clock::time_point::max();
        lowest().cancel(ec);
      }
    }
  }

  Shared& shared_;
  asio::ip::tcp::socket socket_;  // moved into tls_ at STARTTLS
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
  asio::steady_timer timer_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point armed_ = Clock::time_point::max();
  bool expired_ = false;
  bool done_ = false;
  smtp::Session session_;
  std::unique_ptr<char[]> read_buffer_;
};

// The listening socket, the count file and the signals.
class Sink {
 public:
  Sink(asio::io_context& io, Shared& shared)
      : io_(io), shared_(shared), acceptor_(io), count_timer_(io), signals_(io, SIGTERM, SIGINT) {}

  Result<asio::ip::tcp::endpoint> bind(const asio::ip::tcp::endpoint& endpoint) {
    asio::error_code ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
    if (!ec && endpoint.address().is_v6()) acceptor_.set_option(asio::ip::v6_only(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return make_error(endpoint_text(endpoint) + ": " + ec.message());
    auto bound = acceptor_.local_endpoint(ec);
    if (ec) return make_error(endpoint_text(endpoint) + ": " + ec.message());
    return bound;
  }

  void start() {
    asio::co_spawn(io_, accept_loop(), asio::detached);
    if (!shared_.options.count_file.empty()) {
      write_counts();
      asio::co_spawn(io_, count_loop(), asio::detached);
    }
    signals_.async_wait([this](const asio::error_code& ec, int) {
      if (ec) return;
      if (!shared_.options.count_file.empty()) write_counts();
      io_.stop();
    });
  }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      asio::error_code ec;
      asio::ip::tcp::endpoint peer;
      asio::ip::tcp::socket socket =
          co_await acceptor_.async_accept(peer, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted) co_return;
        // EMFILE and friends: back off briefly rather than spin.
        std::fprintf(stderr, "smtpsink: accept: %s\n", ec.message().c_str());
        asio::steady_timer pause(io_, std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      socket.set_option(asio::ip::tcp::no_delay(true), ec);
      if (shared_.active >= shared_.options.max_connections) {
        asio::co_spawn(io_, refuse(std::move(socket)), asio::detached);
        continue;
      }
      auto connection = std::make_shared<Connection>(std::move(socket), shared_, address_text(peer));
      asio::co_spawn(io_, connection->run(), asio::detached);
    }
  }

  static asio::awaitable<void> refuse(asio::ip::tcp::socket socket) {
    asio::error_code ec;
    const std::string reply = smtp::Session::too_many_connections(kHostname);
    co_await asio::async_write(socket, asio::buffer(reply), asio::redirect_error(asio::use_awaitable, ec));
    socket.close(ec);
  }

  asio::awaitable<void> count_loop() {
    for (;;) {
      count_timer_.expires_after(kCountInterval);
      asio::error_code ec;
      co_await count_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      if (shared_.counts.version != written_version_) write_counts();
    }
  }

  void write_counts() {
    const auto result = write_atomically(shared_.options.count_file, counts_json(shared_.counts));
    written_version_ = shared_.counts.version;
    if (!result && !warned_) {
      warned_ = true;
      std::fprintf(stderr, "smtpsink: count file: %s\n", result.error().c_str());
    }
  }

  asio::io_context& io_;
  Shared& shared_;
  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer count_timer_;
  asio::signal_set signals_;
  std::uint64_t written_version_ = 0;
  bool warned_ = false;
};

// Room for every connection plus a few; the soft limit is raised up to the
// hard one.  Returns false when even that is too small.
bool raise_fd_limit(std::size_t connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return true;
  const rlim_t wanted = static_cast<rlim_t>(connections) + 64;
  if (limit.rlim_cur >= wanted) return true;
  limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, limit.rlim_max);
  setrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur >= wanted;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kUsage.data(), stdout);
    return 0;
  }
  auto parsed = parse_options(args);
  if (!parsed) {
    std::fprintf(stderr, "smtpsink: %s\n%s", parsed.error().c_str(), kUsage.data());
    return 2;
  }
  const Options& options = *parsed;
  if (!raise_fd_limit(options.max_connections))
    std::fprintf(stderr, "smtpsink: warning: open-file limit below %zu connections; raise ulimit -n\n",
                 options.max_connections);

  std::shared_ptr<asio::ssl::context> tls_context;
  if (!options.certificates.empty()) {
    config::Tls tls_config;
    tls_config.certificates = options.certificates;
    auto context = tls::make_server_context(tls_config);
    if (!context) {
      std::fprintf(stderr, "smtpsink: %s\n", context.error().c_str());
      return 1;
    }
    tls_context = std::move(*context);
  }

  // Every loopback client may relay to any domain (the default relay_networks).
  auto relay = smtp::RelayPolicy::from_config(config::Config{});
  if (!relay) {
    std::fprintf(stderr, "smtpsink: %s\n", relay.error().c_str());
    return 1;
  }
  Shared shared{options, tls_context.get(), std::move(*relay), {}, {}, {}, 0, 0};
  // Default limits: 35 MiB messages, 1000 recipients, no cap on messages per session.
  shared.settings = smtp::SessionSettings{std::string(kHostname),
                                          tls_context ? config::TlsMode::may : config::TlsMode::none,
                                          config::Limits{}, &shared.relay};

  {
    // Declared after shared and tls_context: destroying the io_context
    // destroys the connections still open, which use both.
    asio::io_context io(1);
    Sink sink(io, shared);
    auto bound = sink.bind(options.listen);
    if (!bound) {
      std::fprintf(stderr, "smtpsink: cannot listen on %s\n", bound.error().c_str());
      return 1;
    }
    sink.start();
    std::printf("listening %s\n", endpoint_text(*bound).c_str());
    std::fflush(stdout);
    io.run();
  }
  return 0;
}
