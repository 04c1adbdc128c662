// The milter client: runs one message past one milter (a Sendmail milter
// protocol version 6 daemon: rspamd's proxy, clamav-milter, opendkim, ...)
// over a Unix or TCP socket, so operators can chain the milters they already
// run.  Protocol sources and the wire format: src/milter/codec.hpp; the
// conversation and what is done with each reply: src/milter/session.hpp.
//
// Like the clamd client (src/filter/clamd_client.hpp) this is a thin
// coroutine shell around a pure core: it connects, writes what the
// MilterSession asks for, reads replies into it, and enforces the deadline.
// Tested against real clamav-milter and opendkim daemons in
// tests/unit/milter_client_test.cpp; the core in milter_codec_test.cpp and
// milter_session_test.cpp.
//
// Error policy: nothing here throws on bad input, a dead milter or a
// timeout; every failure is a Result error whose message is one printable
// line naming the endpoint.  A failed run is not "accept": the caller applies
// its failure policy.
#pragma once

#include <asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "milter/session.hpp"
#include "util/deadline_socket.hpp"
#include "util/result.hpp"

namespace mxgate::milter {

struct MilterEndpoint {
  enum class Kind { unix_socket, tcp } kind = Kind::unix_socket;
  std::string path;  // unix: absolute, at most kMaxUnixPath bytes (sun_path)
  std::string host;  // tcp: IP literal
  std::uint16_t port = 0;
};

// The longest Unix socket path (struct sockaddr_un's sun_path less its NUL).
inline constexpr std::size_t kMaxUnixPath = kMaxUnixSocketPath;

// The forms operators copy from Sendmail and Postfix configurations:
//   "unix:/run/x.sock", "local:/run/x.sock"    (Postfix and Sendmail)
//   "inet:11332@127.0.0.1", "inet6:11332@::1"  (Sendmail: port@host)
//   "inet:127.0.0.1:11332", "inet:[::1]:11332" (Postfix: host:port)
//   "tcp:127.0.0.1:11332", "tcp:[::1]:11332"   (as mxgate's clamd endpoint)
// The host must be an IP literal (no name lookups on the mail path), or
// "localhost", read as 127.0.0.1 (::1 for inet6) without a lookup because
// milter configurations use it so often.  The port is a decimal 1..65535;
// a unix path must be absolute and fit sun_path.
Result<MilterEndpoint> parse_milter_endpoint(std::string_view text);
// "unix:/path", "inet:11332@127.0.0.1" or "inet6:11332@::1" (parses back).
std::string to_string(const MilterEndpoint&);

// SMFIR_PROGRESS moves the deadline to `timeout` after the progress reply,
// but never past kMaxTimeoutsWithProgress times `timeout` after the start.
inline constexpr int kMaxTimeoutsWithProgress = 10;

// One conversation over a fresh connection: negotiation, the message, QUIT
// (src/milter/session.hpp).  Runs on the caller's executor, which must not
// run the coroutine and its timer at the same time (a single-threaded
// io_context or a strand, as everywhere in mxgate).  One deadline, `timeout`
// after the start (extended by SMFIR_PROGRESS as above), covers connecting,
// writing and every reply; when it passes the socket is closed and the answer
// is "milter unix:/x timed out after N ms while connecting|sending|waiting
// for the reply to SMFIC_BODYEOB".  Other errors:
//   "connect to milter unix:/x failed: No such file or directory"
//   "milter unix:/x: sending failed: Broken pipe"
//   "milter unix:/x: reading failed: Connection reset by peer"
//   "milter unix:/x: " + a MilterSession error ("connection closed before the
//   reply to SMFIC_CONNECT", "bad reply to SMFIC_RCPT: ...")
// A timeout of zero or less expires at once.  endpoint and message are used
// until the coroutine ends (it starts only when awaited): keep them alive.
asio::awaitable<Result<MilterResult>> run_milter(const MilterEndpoint& endpoint, const MilterMessage& message,
                                                 std::chrono::milliseconds timeout);

// Applies header changes, in order, to a message's header block (pure; the
// block is split by split_header_block, so indexes mean what the milter saw):
//   add     appends "name:value" at the end of the header block;
//   insert  puts it at position index (0 = top; past the end = at the end);
//   change  replaces the index-th field named name (1-based, names compared
//           ignoring ASCII case; 0 is read as 1); an empty value deletes
//           that field; when there is no such field a non-empty value is
//           appended, as Sendmail's smfi_chgheader does.
// Values are taken as HeaderChange describes them (the text after the colon);
// a bare LF becomes CRLF and a line break not followed by white space gets a
// space, so a value can never start a new field.  The body is not touched;
// a last header line without a line end gets CRLF when fields follow it.
std::string apply_header_changes(std::string_view content, const std::vector<HeaderChange>& changes);

}  // namespace mxgate::milter
