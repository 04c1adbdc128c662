// The clamd client (src/filter/clamd_client.hpp): the pure parsers, reader
// and framer, then the coroutine shell around them.
#include "filter/clamd_client.hpp"

#include "util/deadline_socket.hpp"
#include "util/quoted.hpp"

#include <algorithm>
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
#include <cstring>
#include <memory>
#include <optional>

namespace mxgate::filter {
namespace {

bool printable(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

Error unexpected_reply(std::string_view reply) {
  return make_error("unexpected clamd reply: " + quote_escaped(reply));
}


}  // namespace

// ---------------------------------------------------------------------------
// Endpoints

Result<ClamdEndpoint> parse_clamd_endpoint(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return make_error("clamd endpoint " + quote_escaped(text) + ": " + std::string(why));
  };
  ClamdEndpoint endpoint;
  if (text.starts_with("unix:")) {
    const std::string_view path = text.substr(5);
    if (path.empty()) return bad("no socket path after \"unix:\"");
    if (path.front() != '/') return bad("the socket path must be absolute");
    if (path.find('\0') != std::string_view::npos) return bad("NUL in the socket path");
    if (path.size() > kMaxUnixPath)
      return bad("the socket path is longer than " + std::to_string(kMaxUnixPath) + " bytes");
    endpoint.kind = ClamdEndpoint::Kind::unix_socket;
    endpoint.path = std::string(path);
    return endpoint;
  }
  if (!text.starts_with("tcp:"))
    return bad("not \"unix:/path\", \"tcp:address:port\" or \"tcp:[v6-address]:port\"");

  const std::string_view rest = text.substr(4);
  std::string_view host;
  std::string_view port;
  asio::error_code ec;
  std::string canonical;
  if (rest.starts_with("[")) {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("no \"]\" after the IPv6 address");
    host = rest.substr(1, close - 1);
    const std::string_view after = rest.substr(close + 1);
    if (!after.starts_with(":")) return bad("no \":port\" after the address");
    port = after.substr(1);
    const auto address = asio::ip::make_address_v6(std::string(host), ec);
    if (ec) return bad(quote_escaped(host) + " is not an IPv6 address");
    canonical = address.to_string();
  } else {
    const std::size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("no \":port\" after the address");
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return bad("an IPv6 address must be in brackets: tcp:[::1]:3310");
    const auto address = asio::ip::make_address_v4(std::string(host), ec);
    if (ec) return bad(quote_escaped(host) + " is not an IPv4 address (names are not looked up)");
    canonical = address.to_string();
  }
  auto number = parse_port(port);
  if (!number) return bad(number.error());
  endpoint.kind = ClamdEndpoint::Kind::tcp;
  endpoint.host = std::move(canonical);
  endpoint.port = *number;
  return endpoint;
}

std::string to_string(const ClamdEndpoint& endpoint) {
  if (endpoint.kind == ClamdEndpoint::Kind::unix_socket) return "unix:" + endpoint.path;
  const std::string port = std::to_string(endpoint.port);
  if (endpoint.host.find(':') != std::string::npos) return "tcp:[" + endpoint.host + "]:" + port;
  return "tcp:" + endpoint.host + ":" + port;
}

// ---------------------------------------------------------------------------
// Replies

Result<ClamdVerdict> parse_clamd_reply(std::string_view reply) {
  std::string_view text = reply;
  if (text.ends_with('\0')) text.remove_suffix(1);
  if (text.find('\0') != std::string_view::npos) return unexpected_reply(reply);

  constexpr std::string_view kStream = "stream: ";
  constexpr std::string_view kFound = " FOUND";
  constexpr std::string_view kError = " ERROR";
  if (text == "stream: OK") return ClamdVerdict{};
  if (text.ends_with(kError)) {
    std::string_view why = text.substr(0, text.size() - kError.size());
    if (why.starts_with(kStream)) why.remove_prefix(kStream.size());
    return make_error("clamd error: " + escaped(why));
  }
  if (text.starts_with(kStream) && text.ends_with(kFound) && text.size() > kStream.size() + kFound.size()) {
    const std::string_view name = text.substr(kStream.size(), text.size() - kStream.size() - kFound.size());
    if (printable(name) && name.front() != ' ' && name.back() != ' ')
      return ClamdVerdict{true, std::string(name)};
  }
  return unexpected_reply(reply);
}

std::size_t ClamdReplyReader::feed(std::string_view bytes) {
  if (state_ != State::need_more) return 0;
  const std::size_t nul = bytes.find('\0');
  const std::size_t text = nul == std::string_view::npos ? bytes.size() : nul;
  if (text_.size() + text > kMaxReplySize) {
    state_ = State::failed;
    error_ = "reply longer than " + std::to_string(kMaxReplySize) + " bytes";
    return 0;
  }
  text_.append(bytes.substr(0, text));
  if (nul == std::string_view::npos) return bytes.size();
  state_ = State::done;
  return nul + 1;
}

void ClamdReplyReader::feed_eof() {
  if (state_ != State::need_more) return;
  state_ = State::failed;
  error_ =
      text_.empty() ? "connection closed before the reply" : "connection closed in the middle of the reply";
}

// ---------------------------------------------------------------------------
// INSTREAM framing

namespace {
constexpr std::string_view kInstreamCommand{"zINSTREAM\0", 10};
constexpr std::string_view kPingCommand{"zPING\0", 6};
constexpr char kTerminatorBytes[4] = {0, 0, 0, 0};
constexpr std::string_view kTerminator{kTerminatorBytes, 4};
}  // namespace

ClamdInstreamFramer::ClamdInstreamFramer(std::string_view data, std::size_t chunk_size)
    : rest_(data), chunk_size_(std::clamp<std::size_t>(chunk_size, 1, 0xffffffffu)) {}

ClamdInstreamFramer::Piece ClamdInstreamFramer::next() {
  std::size_t used = 0;
  if (!started_) {
    std::memcpy(prefix_.data(), kInstreamCommand.data(), kInstreamCommand.size());
    used = kInstreamCommand.size();
    started_ = true;
  }
  Piece piece;
  const std::size_t n = std::min(rest_.size(), chunk_size_);
  if (n > 0) {
    const auto length = static_cast<std::uint32_t>(n);
    prefix_[used++] = static_cast<char>(length >> 24);
    prefix_[used++] = static_cast<char>(length >> 16);
    prefix_[used++] = static_cast<char>(length >> 8);
    prefix_[used++] = static_cast<char>(length);
    piece.payload = rest_.substr(0, n);
    rest_.remove_prefix(n);
  }
  piece.prefix = std::string_view(prefix_.data(), used);
  if (rest_.empty()) {
    piece.suffix = kTerminator;
    done_ = true;
  }
  return piece;
}

// ---------------------------------------------------------------------------
// The coroutine shell

namespace {

// One connection to clamd under one deadline: connect, write, read one reply.
// Replies are short: a 512-byte read buffer (util/deadline_socket.hpp).
class Exchange {
 public:
  Exchange(const asio::any_io_executor& executor, const ClamdEndpoint& endpoint,
           std::chrono::milliseconds timeout)
      : socket_(executor, std::chrono::steady_clock::now() + timeout), name_(to_string(endpoint)), timeout_(timeout) {}

  const std::string& name() const { return name_; }

  asio::awaitable<Result<void>> connect(const ClamdEndpoint& endpoint) {
    auto address = stream_endpoint(endpoint.kind == ClamdEndpoint::Kind::unix_socket, endpoint.path, endpoint.host,
                                   endpoint.port, "clamd endpoint " + quote_escaped(to_string(endpoint)));
    if (!address) co_return Error{address.error()};
    const asio::error_code ec = co_await socket_.connect(*address);
    if (socket_.expired()) co_return timed_out("connecting");
    if (ec) co_return make_error("connect to clamd " + name_ + " failed: " + ec.message());
    co_return Result<void>{};
  }

  // Writes prefix, payload and suffix as one gather; the error, if any.
  asio::awaitable<asio::error_code> write(std::string_view prefix, std::string_view payload,
                                          std::string_view suffix) {
    const std::array<asio::const_buffer, 3> buffers{asio::buffer(prefix), asio::buffer(payload),
                                                    asio::buffer(suffix)};
    co_return co_await socket_.write(buffers);
  }

  // Reads one NUL-terminated reply (without its NUL).
  asio::awaitable<Result<std::string>> read_reply() {
    ClamdReplyReader reader;
    while (reader.state() == ClamdReplyReader::State::need_more) {
      const auto [bytes, ec] = co_await socket_.read_some();
      reader.feed(bytes);
      if (reader.state() != ClamdReplyReader::State::need_more) break;
      if (socket_.expired()) co_return timed_out("waiting for the reply");
      if (ec == asio::error::eof) {
        reader.feed_eof();
      } else if (ec) {
        co_return make_error("clamd " + name_ + ": reading the reply failed: " + ec.message());
      }
    }
    if (reader.failed()) co_return make_error("clamd " + name_ + ": " + reader.error());
    co_return reader.reply();
  }

  // A write failed: clamd may have answered and closed (its size limit), so
  // its reply is read if it is there; otherwise the write's error.
  asio::awaitable<Result<std::string>> reply_after_write_error(const asio::error_code& write_error) {
    if (socket_.expired()) co_return timed_out("sending");
    auto reply = co_await read_reply();
    if (reply || socket_.expired()) co_return reply;
    co_return make_error("clamd " + name_ + " closed the connection while sending: " + write_error.message());
  }

  Error timed_out(std::string_view phase) const {
    return make_error("clamd " + name_ + " timed out after " + std::to_string(timeout_.count()) +
                      " ms while " + std::string(phase));
  }

 private:
  DeadlineSocket<512> socket_;
  std::string name_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

asio::awaitable<Result<ClamdVerdict>> clamd_scan(const ClamdEndpoint& endpoint, std::string_view data,
                                                 ClamdScanOptions options) {
  if (data.size() > options.max_stream)
    co_return make_error("object of " + std::to_string(data.size()) +
                         " bytes is larger than the clamd stream limit (max_stream " +
                         std::to_string(options.max_stream) + " bytes); not scanned");

  Exchange exchange(co_await asio::this_coro::executor, endpoint, options.timeout);
  if (auto connected = co_await exchange.connect(endpoint); !connected) co_return Error{connected.error()};

  std::optional<Result<std::string>> reply;
  ClamdInstreamFramer framer(data, options.chunk_size);
  while (!framer.done()) {
    const ClamdInstreamFramer::Piece piece = framer.next();
    if (const asio::error_code ec = co_await exchange.write(piece.prefix, piece.payload, piece.suffix)) {
      reply.emplace(co_await exchange.reply_after_write_error(ec));
      break;
    }
  }
  if (!reply) reply.emplace(co_await exchange.read_reply());
  if (!*reply) co_return Error{reply->error()};

  auto verdict = parse_clamd_reply(reply->value());
  if (verdict) co_return verdict;
  if (reply->value().find("size limit exceeded") != std::string::npos)
    co_return make_error(verdict.error() + " (" + exchange.name() +
                         ": its StreamMaxLength is below this object's " + std::to_string(data.size()) +
                         " bytes; set it to at least max_stream " + std::to_string(options.max_stream) + ")");
  co_return make_error(verdict.error() + " (" + exchange.name() + ")");
}

asio::awaitable<Result<void>> clamd_ping(const ClamdEndpoint& endpoint, std::chrono::milliseconds timeout) {
  Exchange exchange(co_await asio::this_coro::executor, endpoint, timeout);
  if (auto connected = co_await exchange.connect(endpoint); !connected) co_return connected;

  Result<std::string> reply = make_error("");
  if (const asio::error_code ec = co_await exchange.write(kPingCommand, {}, {})) {
    reply = co_await exchange.reply_after_write_error(ec);
  } else {
    reply = co_await exchange.read_reply();
  }
  if (!reply) co_return Error{reply.error()};
  if (reply.value() != "PONG")
    co_return make_error("unexpected clamd reply to PING: " + quote_escaped(reply.value()) + " (" + exchange.name() +
                         ")");
  co_return Result<void>{};
}

}  // namespace mxgate::filter
