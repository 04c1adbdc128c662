// The milter client (src/milter/client.hpp): endpoints, header changes, and
// the coroutine shell around MilterSession.
#include "milter/client.hpp"

#include "util/deadline_socket.hpp"

#include <algorithm>
#include <array>
#include <asio/buffer.hpp>
#include <asio/generic/stream_protocol.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <charconv>
#include <memory>

namespace mxgate::milter {
namespace {

// An IP literal (IPv6 with or without brackets) or "localhost", canonical.
Result<std::string> parse_host(std::string_view host, bool v6_default) {
  if (host == "localhost") return std::string(v6_default ? "::1" : "127.0.0.1");
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  asio::error_code ec;
  const auto address = asio::ip::make_address(std::string(host), ec);
  if (ec || host.empty())
    return make_error(quote_text(host) +
                      " is not an IP address (names other than localhost are not looked up)");
  return address.to_string();
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) {
             return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
           };
           return lower(x) == lower(y);
         });
}

// "name:value\r\n" with every line break CRLF and followed by white space.
std::string field_text(const HeaderChange& change) {
  std::string out = change.name + ":";
  const std::string& value = change.value;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (c == '\r' && i + 1 < value.size() && value[i + 1] == '\n') continue;
    if (c == '\n' || c == '\r') {
      out += "\r\n";
      if (i + 1 >= value.size() || (value[i + 1] != ' ' && value[i + 1] != '\t')) out += ' ';
      continue;
    }
    out += c;
  }
  out += "\r\n";
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// Endpoints

Result<MilterEndpoint> parse_milter_endpoint(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return make_error("milter endpoint " + quote_text(text) + ": " + std::string(why));
  };
  MilterEndpoint endpoint;
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos)
    return bad("not \"unix:/path\", \"inet:port@host\", \"inet:host:port\" or \"tcp:host:port\"");
  const std::string_view scheme = text.substr(0, colon);
  const std::string_view rest = text.substr(colon + 1);

  if (scheme == "unix" || scheme == "local") {
    if (rest.empty()) return bad("no socket path");
    if (rest.front() != '/') return bad("the socket path must be absolute");
    if (rest.find('\0') != std::string_view::npos) return bad("NUL in the socket path");
    if (rest.size() > kMaxUnixPath)
      return bad("the socket path is longer than " + std::to_string(kMaxUnixPath) + " bytes");
    endpoint.kind = MilterEndpoint::Kind::unix_socket;
    endpoint.path = std::string(rest);
    return endpoint;
  }
  if (scheme != "inet" && scheme != "inet6" && scheme != "tcp")
    return bad("unknown transport " + quote_text(scheme) + " (unix, local, inet, inet6 or tcp)");

  std::string_view host;
  std::string_view port;
  if (const std::size_t at = rest.find('@'); at != std::string_view::npos && scheme != "tcp") {
    port = rest.substr(0, at);  // Sendmail: port@host
    host = rest.substr(at + 1);
  } else if (rest.starts_with("[")) {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("no \"]\" after the IPv6 address");
    host = rest.substr(0, close + 1);
    const std::string_view after = rest.substr(close + 1);
    if (!after.starts_with(":")) return bad("no \":port\" after the address");
    port = after.substr(1);
  } else {
    const std::size_t last = rest.rfind(':');
    if (last == std::string_view::npos) return bad("no port (\"port@host\" or \"host:port\")");
    host = rest.substr(0, last);
    port = rest.substr(last + 1);
    if (host.find(':') != std::string_view::npos)
      return bad("an IPv6 address must be in brackets: [::1]:port");
  }
  auto number = parse_port(port);
  if (!number) return bad(number.error());
  auto address = parse_host(host, scheme == "inet6");
  if (!address) return bad(address.error());
  endpoint.kind = MilterEndpoint::Kind::tcp;
  endpoint.host = std::move(*address);
  endpoint.port = *number;
  return endpoint;
}

std::string to_string(const MilterEndpoint& endpoint) {
  if (endpoint.kind == MilterEndpoint::Kind::unix_socket) return "unix:" + endpoint.path;
  const bool v6 = endpoint.host.find(':') != std::string::npos;
  return std::string(v6 ? "inet6:" : "inet:") + std::to_string(endpoint.port) + "@" + endpoint.host;
}

// ---------------------------------------------------------------------------
// Header changes

std::string apply_header_changes(std::string_view content, const std::vector<HeaderChange>& changes) {
  if (changes.empty()) return std::string(content);
  const HeaderBlock block = split_header_block(content);
  struct Field {
    std::string name;
    std::string raw;
  };
  std::vector<Field> fields;
  fields.reserve(block.fields.size() + changes.size());
  for (const HeaderBlock::Field& field : block.fields)
    fields.push_back({std::string(field.name), std::string(field.raw)});

  for (const HeaderChange& change : changes) {
    switch (change.kind) {
      case HeaderChange::Kind::add:
        fields.push_back({change.name, field_text(change)});
        break;
      case HeaderChange::Kind::insert: {
        const std::size_t at = std::min(change.index, fields.size());
        fields.insert(fields.begin() + static_cast<std::ptrdiff_t>(at),
                      Field{change.name, field_text(change)});
        break;
      }
      case HeaderChange::Kind::change: {
        std::size_t wanted = std::max<std::size_t>(change.index, 1);
        auto it = std::find_if(fields.begin(), fields.end(), [&](const Field& field) {
          return iequals(field.name, change.name) && --wanted == 0;
        });
        if (it == fields.end()) {
          if (!change.value.empty()) fields.push_back({change.name, field_text(change)});
        } else if (change.value.empty()) {
          fields.erase(it);
        } else {
          *it = Field{change.name, field_text(change)};
        }
        break;
      }
    }
  }

  std::string out;
  out.reserve(content.size() + 256);
  for (const Field& field : fields) {
    out += field.raw;
    if (!out.ends_with('\n')) out += "\r\n";
  }
  out += block.rest;
  return out;
}

// ---------------------------------------------------------------------------
// The coroutine shell

namespace {

using Clock = std::chrono::steady_clock;

// Owns the socket and the deadline of one conversation (util/deadline_socket.hpp).
class Connection {
 public:
  Connection(const asio::any_io_executor& executor, const MilterEndpoint& endpoint,
             std::chrono::milliseconds timeout)
      : start_(Clock::now()), socket_(executor, start_ + timeout), name_("milter " + to_string(endpoint)),
        timeout_(timeout) {}

  const std::string& name() const { return name_; }
  bool expired() const { return socket_.expired(); }

  // SMFIR_PROGRESS came: timeout from now, within the cap.
  void extend() {
    const Clock::time_point cap = start_ + kMaxTimeoutsWithProgress * timeout_;
    socket_.set_deadline(std::max(socket_.deadline(), std::min(Clock::now() + timeout_, cap)));
  }

  asio::awaitable<Result<void>> connect(const MilterEndpoint& endpoint) {
    auto address = stream_endpoint(endpoint.kind == MilterEndpoint::Kind::unix_socket, endpoint.path, endpoint.host,
                                   endpoint.port, "milter endpoint " + quote_text(to_string(endpoint)));
    if (!address) co_return Error{address.error()};
    const asio::error_code ec = co_await socket_.connect(*address);
    if (socket_.expired()) co_return timed_out("connecting");
    if (ec) co_return make_error("connect to " + name_ + " failed: " + ec.message());
    co_return Result<void>{};
  }

  asio::awaitable<asio::error_code> write(std::string_view bytes) {
    co_return co_await socket_.write(asio::buffer(bytes));
  }

  // Some bytes, or an error (eof included).
  asio::awaitable<std::pair<std::string_view, asio::error_code>> read() { return socket_.read_some(); }

  Error timed_out(std::string_view phase) const {
    return make_error(name_ + " timed out after " + std::to_string(timeout_.count()) + " ms while " +
                      std::string(phase));
  }

 private:
  Clock::time_point start_;
  DeadlineSocket<std::size_t{16} << 10> socket_;
  std::string name_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

asio::awaitable<Result<MilterResult>> run_milter(const MilterEndpoint& endpoint, const MilterMessage& message,
                                                 std::chrono::milliseconds timeout) {
  Connection connection(co_await asio::this_coro::executor, endpoint, timeout);
  if (auto connected = co_await connection.connect(endpoint); !connected) co_return Error{connected.error()};

  // On the heap: a coroutine frame this large draws GCC 12's false
  // -Wmismatched-new-delete (see util/deadline_socket.hpp).
  const auto core = std::make_unique<MilterSession>(message);
  MilterSession& session = *core;
  for (;;) {
    MilterSession::Step step = session.advance();
    if (!step.output.empty()) {
      const asio::error_code ec = co_await connection.write(step.output);
      // The last step only says goodbye (SMFIC_QUIT): the outcome is known.
      if (ec && step.next != MilterSession::Next::close) {
        if (connection.expired()) co_return connection.timed_out("sending");
        co_return make_error(connection.name() + ": sending failed: " + ec.message());
      }
    }
    if (step.next == MilterSession::Next::close) break;
    if (step.next == MilterSession::Next::write) continue;

    const std::string awaited = session.awaited();
    const std::uint64_t progress = session.progress_count();
    const auto [bytes, ec] = co_await connection.read();
    if (!bytes.empty()) session.receive(bytes);
    if (session.progress_count() != progress) connection.extend();
    if (connection.expired()) co_return connection.timed_out("waiting for the reply to " + awaited);
    if (ec == asio::error::eof) {
      session.receive_eof();
    } else if (ec && !session.finished() && !session.awaited().empty()) {
      co_return make_error(connection.name() + ": reading failed: " + ec.message());
    }
  }
  const Result<MilterResult>& result = session.result();
  if (!result) co_return make_error(connection.name() + ": " + result.error());
  co_return result.value();
}

}  // namespace mxgate::milter
