// The clamd client: scans one object with ClamAV's daemon over a Unix or TCP
// socket, using the protocol of clamd(8) (man page, section "COMMANDS",
// "INSTREAM" and "PING"):
//
//   client: "zINSTREAM\0"                      command, NUL-terminated ("z" form)
//           <4-byte big-endian length><bytes>  one chunk, repeated
//           "\0\0\0\0"                          a zero-length chunk ends the stream
//   clamd:  "stream: OK\0"                      clean
//           "stream: <signature> FOUND\0"       infected
//           "INSTREAM size limit exceeded. ERROR\0", "<reason> ERROR\0"
//   and for the liveness check "zPING\0" -> "PONG\0".
//
// clamd counts the bytes of one INSTREAM against its StreamMaxLength: exactly
// StreamMaxLength is scanned, one byte more is refused with "INSTREAM size
// limit exceeded. ERROR", after which clamd closes the connection while the
// client may still be sending (the client then sees EPIPE or ECONNRESET and
// reads the reply that is already there).
//
// Like the SMTP client (src/delivery/smtp_client.cpp) the file has a pure
// core and a thin coroutine shell: the endpoint and reply parsers, the reply
// reader and the INSTREAM framer never touch a socket and are ground at every
// byte split in tests/unit/filter_clamd_reply_test.cpp; clamd_scan and
// clamd_ping are the shell, tested against a real clamd in
// tests/unit/filter_clamd_client_test.cpp.
//
// Error policy: nothing here throws on bad input, a dead clamd or a timeout;
// every failure is a Result error whose message is one printable line
// (clamd's own text is escaped and cut) for the log and Findings::fail.  A
// scan that failed is not "clean": the caller applies [filter] on_failure.
#pragma once

#include <array>
#include <asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "util/deadline_socket.hpp"
#include "util/result.hpp"

namespace mxgate::filter {

struct ClamdEndpoint {
  enum class Kind { unix_socket, tcp } kind = Kind::unix_socket;
  std::string path;  // unix: absolute, at most kMaxUnixPath bytes (sun_path)
  std::string host;  // tcp: IP literal
  std::uint16_t port = 0;
};

// The longest Unix socket path (struct sockaddr_un's sun_path less its NUL).
inline constexpr std::size_t kMaxUnixPath = kMaxUnixSocketPath;

// "unix:/run/clamav/clamd.ctl" or "tcp:127.0.0.1:3310" / "tcp:[::1]:3310".
// A unix path must be absolute and fit sun_path; a tcp host must be an IP
// literal (IPv6 in brackets; no name lookups on the scan path) and the port
// a decimal 1..65535.
Result<ClamdEndpoint> parse_clamd_endpoint(std::string_view text);
// The same form back: "unix:/path", "tcp:127.0.0.1:3310", "tcp:[::1]:3310".
std::string to_string(const ClamdEndpoint&);

struct ClamdVerdict {
  bool infected = false;
  // The name clamd reports when infected, e.g. "Eicar-Signature", or
  // "Eicar-Signature.UNOFFICIAL" for a signature from an unsigned database
  // (clamd appends ".UNOFFICIAL" to every name not from a signed .cvd/.cld).
  std::string signature;
};

// Parses clamd's INSTREAM reply ("stream: OK\0", "stream: Eicar-Test-Signature FOUND\0",
// "INSTREAM size limit exceeded. ERROR\0", "... ERROR"): a verdict or an error message.
// One trailing NUL is optional; the text must hold no other NUL.  Errors:
//   "... ERROR"       "clamd error: <text before ERROR, "stream: " dropped>"
//   anything else     "unexpected clamd reply: \"<escaped, at most 200 bytes>\""
//   (including an empty reply, a FOUND without a name, or control characters
//   in the name)
Result<ClamdVerdict> parse_clamd_reply(std::string_view reply);

// Collects one NUL-terminated reply from the bytes clamd sends, whatever
// their cut into reads (Beast's parser contract: put bytes, need more, done,
// or a terminal error; put_eof at the end).  Never touches a socket.
//
// Limit: kMaxReplySize octets of reply text, the NUL not counted: 4096 is
// accepted, 4097 is an error.  clamd's longest replies (a signature name or
// an error text) are far shorter.
// Bytes after the NUL are not consumed (clamd sends one reply per command;
// with AllMatchScanning it may send more FOUND replies: the first decides).
class ClamdReplyReader {
 public:
  static constexpr std::size_t kMaxReplySize = 4096;

  enum class State { need_more, done, failed };

  // Consumes bytes up to and including the terminating NUL; returns how many
  // (fewer than given only once done or failed).
  std::size_t feed(std::string_view bytes);
  // The peer closed the connection: need_more turns into failed.
  void feed_eof();

  State state() const { return state_; }
  bool done() const { return state_ == State::done; }
  bool failed() const { return state_ == State::failed; }
  // The reply without its NUL.  Precondition: done().
  const std::string& reply() const { return text_; }
  // Why it failed: "reply longer than 4096 bytes", "connection closed
  // before the reply", "connection closed in the middle of the reply".
  const std::string& error() const { return error_; }

 private:
  std::string text_;
  std::string error_;
  State state_ = State::need_more;
};

// The bytes of one zINSTREAM request, as pieces to write in order: the
// first piece's prefix holds the command, every piece's prefix the 4-byte
// big-endian length of its payload, and the last piece's suffix the
// zero-length terminator.  Empty data is one piece: command, terminator.
// Pure: the payloads point into the data given to the constructor.
class ClamdInstreamFramer {
 public:
  // chunk_size is the largest payload per piece, taken into [1, 2^32 - 1].
  ClamdInstreamFramer(std::string_view data, std::size_t chunk_size);

  struct Piece {
    std::string_view prefix;   // valid until the next call of next()
    std::string_view payload;  // a slice of the data
    std::string_view suffix;   // "\0\0\0\0" on the last piece, else empty
  };

  bool done() const { return done_; }
  // The next piece.  Precondition: !done().
  Piece next();

 private:
  std::string_view rest_;
  std::size_t chunk_size_;
  std::array<char, 10 + 4> prefix_{};  // "zINSTREAM\0" and a length
  bool started_ = false;
  bool done_ = false;
};

struct ClamdScanOptions {
  std::size_t max_stream = 25u << 20;  // bytes sent per scan; set clamd's StreamMaxLength >= this
  std::size_t chunk_size = 64u << 10;
  std::chrono::milliseconds timeout{30000};  // whole scan: connect, send, reply
};

// Scans one object over a fresh connection with zINSTREAM (null-terminated command,
// 4-byte big-endian length-prefixed chunks, zero-length terminator).  Data longer
// than max_stream is never sent past the cap (clamd would hang up mid-stream): it
// answers an error "larger than the clamd stream limit" without connecting.
//
// Runs on the caller's executor (co_await asio::this_coro::executor), which
// must not run the coroutine and its timer at the same time (a single-
// threaded io_context or a strand, as everywhere in mxgate).  One deadline
// covers the whole scan: when it passes the socket is closed, pending I/O
// ends, and the answer is "clamd <endpoint> timed out after N ms while
// connecting|sending|waiting for the reply".  Other errors:
//   "connect to clamd unix:/x failed: No such file or directory"
//   "clamd error: INSTREAM size limit exceeded. (unix:/x: its StreamMaxLength
//    is below this object's N bytes; set it to at least max_stream M)"
//   "clamd unix:/x closed the connection while sending: Broken pipe"
//   "clamd unix:/x: connection closed before the reply" (a ClamdReplyReader error)
//   a parse_clamd_reply error followed by " (unix:/x)"
// chunk_size is taken into [1, 2^32 - 1] (ClamdInstreamFramer); a timeout
// of zero or less expires at once.
// endpoint and data are used until the coroutine ends (it starts only when
// awaited): keep them alive, e.g. not temporaries handed to co_spawn.
asio::awaitable<Result<ClamdVerdict>> clamd_scan(const ClamdEndpoint& endpoint, std::string_view data,
                                                 ClamdScanOptions options);

// Sends zPING, expects "PONG"; for the start-up log line.  The same deadline
// and error rules as clamd_scan.
asio::awaitable<Result<void>> clamd_ping(const ClamdEndpoint& endpoint, std::chrono::milliseconds timeout);

}  // namespace mxgate::filter
