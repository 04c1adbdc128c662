// The SMTP client's reply parser (RFC 5321 section 4.2): bytes from the
// server in, complete replies {code, lines} out.  Incremental and split
// invariant: the same replies and the same error come out whatever the
// input's cut into reads (tests/unit/smtp_client_reply_parser_test.cpp grinds
// every split).  It never touches a socket.
//
// Grammar accepted (RFC 5321 section 4.2.1):
//   reply = *( code "-" [text] EOL ) code [ SP [text] ] EOL
//   code  = %x32-35 %x30-35 %x30-39      (2yz..5yz; no 1yz in SMTP)
//   EOL   = CRLF, or a bare LF (tolerated, as Postfix does: the line ends at LF
//           and one CR before it is dropped)
// Every line of one reply must carry the same code.
//
// Limits (an overlong reply is an error, not truncated):
//   kMaxLineLength  4096 octets per line, line end included: 4096 is
//                   accepted, 4097 is an error.  RFC 5321 4.5.3.1.5 allows
//                   512; real servers send longer EHLO/4xx lines.
//   kMaxReplySize   64 KiB per reply, every line and line end counted:
//                   65536 is accepted, 65537 is an error.
// After an error the parser stays failed; the connection is to be closed.
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::delivery {

struct ServerReply {
  int code = 0;
  std::vector<std::string> lines;  // each line's text after "ddd-"/"ddd ", without its line end

  // The reply as one line for logs and results: "550 5.1.1 No such user";
  // a multi-line reply keeps each line's "ddd-"/"ddd " prefix and joins the
  // lines with a space ("550-5.1.1 First 550 5.1.1 Second"), as Postfix does.
  std::string text() const;
  bool positive() const { return code >= 200 && code < 300; }
  bool intermediate() const { return code >= 300 && code < 400; }
  bool transient() const { return code >= 400 && code < 500; }
  bool permanent() const { return code >= 500 && code < 600; }

  bool operator==(const ServerReply&) const = default;
};

class ReplyParser {
 public:
  static constexpr std::size_t kMaxLineLength = 4096;
  static constexpr std::size_t kMaxReplySize = std::size_t{64} * 1024;

  enum class Error { none, malformed_line, inconsistent_code, line_too_long, reply_too_long };

  // Consumes bytes; complete replies queue up for take().  Returns the
  // number of bytes consumed: all of them, unless an error stops it (then
  // the rest is ignored and error() says why).
  std::size_t feed(std::string_view bytes);

  bool has_reply() const { return !ready_.empty(); }
  // The oldest complete reply.  Precondition: has_reply().
  ServerReply take();

  Error error() const { return error_; }
  bool failed() const { return error_ != Error::none; }
  // True while a reply has begun but not ended (a partial line or continuation lines).
  bool partial() const { return !line_.empty() || !current_.lines.empty(); }

  // Octets received but not yet taken: queued replies plus a partial reply.
  std::size_t buffered() const { return buffered_; }
  // Drops everything buffered (queued replies and a partial reply) and
  // returns how many octets that was.  Used after the STARTTLS 220: nothing
  // the server sent in cleartext after it may be read as a reply.  An
  // error, once set, stays.
  std::size_t discard();

 private:
  void end_line();
  void fail(Error error) { error_ = error; }

  std::string line_;              // the current line without its LF (a trailing CR kept until the LF)
  ServerReply current_;           // lines of the reply being read
  std::size_t current_size_ = 0;  // octets of current_, line ends included
  std::deque<ServerReply> ready_;
  std::deque<std::size_t> ready_sizes_;
  std::size_t buffered_ = 0;
  Error error_ = Error::none;
};

std::string_view to_string(ReplyParser::Error error);

}  // namespace mxgate::delivery
