// The SMTP client as a pure state machine (RFC 5321 client side, RFC 2920
// PIPELINING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3207
// STARTTLS): replies in, commands and "what next" out.  It never touches a
// socket, a timer or OpenSSL; src/delivery/smtp_client.cpp is the coroutine
// shell that performs its steps.  Unit-tested by feeding replies in
// tests/unit/smtp_client_session_test.cpp.
//
// The dialogue:
//   greeting   220 expected; anything else fails the connection (QUIT sent).
//   EHLO       250: the extensions are parsed.  5xx: HELO instead (no
//              extensions).  Anything else fails the connection.
//   STARTTLS   sent when TLS is wanted, not yet active and offered.  Not
//              offered: opportunistic goes on in cleartext, required fails
//              with "STARTTLS not offered".  The reply must be exactly 220
//              (then Next::start_tls; the shell discards whatever else the
//              server sent in cleartext, handshakes and calls
//              tls_established(), which says EHLO again).  A 4xx/5xx refusal:
//              opportunistic goes on in cleartext, required fails.
//   checks     SMTPUTF8 needed but not offered: every recipient gets the
//              local 553 5.6.7; content above an advertised SIZE: 552 5.3.4.
//              Neither sends MAIL.
//   MAIL/RCPT/DATA  as one group with PIPELINING (replies matched in order),
//              else one at a time.  MAIL refused: every recipient gets its
//              reply.  RCPT refused: that recipient gets its reply.  No
//              recipient accepted: no content is sent.  DATA refused: the
//              accepted recipients get its reply.
//   content    dot-stuffed, ended by CRLF.CRLF; its reply goes to every
//              accepted recipient.
//   QUIT       always tried at the end; its reply (or none) changes nothing.
// A reply of an unexpected class (3yz to RCPT, 2yz to DATA, ...) is a
// protocol error: the connection fails and the results so far are kept.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "delivery/smtp_client.hpp"
#include "delivery/smtp_reply_parser.hpp"

namespace mxgate::delivery {

// What one EHLO reply advertises (RFC 5321 4.1.1.1: the first line is the
// server's name, every further line a keyword and its parameters;
// keywords are case-insensitive).
struct Extensions {
  bool pipelining = false;             // RFC 2920
  bool size = false;                   // RFC 1870
  std::uint64_t size_limit = 0;        // SIZE n; 0: no fixed limit announced
  bool eightbitmime = false;           // RFC 6152
  bool smtputf8 = false;               // RFC 6531
  bool starttls = false;               // RFC 3207
  bool chunking = false;               // RFC 3030 (parsed; BDAT is not used)
  bool enhanced_status_codes = false;  // RFC 2034

  bool operator==(const Extensions&) const = default;
};

Extensions parse_ehlo(const ServerReply& reply);

class SmtpClientSession {
 public:
  enum class TlsUse { none, opportunistic, required };

  struct Settings {
    std::string helo_name;    // our EHLO/HELO argument
    std::string server_name;  // the peer in local replies: "SMTPUTF8 not supported by <server_name>"
    TlsUse tls = TlsUse::none;
  };

  struct Transaction {
    std::string sender;  // without <>; empty: the null reverse-path
    std::vector<std::string> recipients;
    bool smtputf8 = false;
    bool body_8bitmime = false;
    std::uint64_t content_size = 0;
  };

  enum class Next {
    read_reply,  // write output, then read one reply (timeout per wait) and call on_reply()
    start_tls,   // write nothing; discard buffered input, handshake, call tls_established() or tls_failed()
    close,       // write output (if any), then close
  };

  // Which RFC 5321 4.5.3.2 timeout applies to the next reply.
  enum class Wait { greeting, command, data_init, data_end, quit };

  struct Step {
    std::string output;  // bytes to write first
    // Write the message content instead of output, framed by the shell
    // with DataFramer (src/delivery/data_framer.hpp) piece by piece: data
    // block timeout per write.
    bool content = false;
    Next next = Next::read_reply;
  };

  SmtpClientSession(Settings settings, Transaction transaction, std::string_view content);

  // The first step: read the greeting.
  Step start();
  Step on_reply(const ServerReply& reply);
  // After the STARTTLS handshake: forget the extensions, say EHLO again.
  Step tls_established();
  // The handshake failed or the TLS policy refused the peer: the connection fails with error.
  void tls_failed(std::string error);
  // The shell could not read a reply: timeout, EOF, I/O error or a reply the
  // parser refused.  Fails the connection unless the results are already final.
  void connection_lost(std::string_view why);

  Wait waiting_for() const;
  bool tls_active() const { return tls_active_; }
  // mxgate probe: QUIT where the transaction would begin (no MAIL is sent).
  void stop_before_mail() { stop_before_mail_ = true; }
  const Extensions& extensions() const { return ext_; }
  // True once every recipient has its final answer (or the attempt failed):
  // only QUIT may still be pending.
  bool finished() const { return state_ == State::quit || state_ == State::closed; }

  // Connection reuse (src/delivery/smtp_client.cpp ConnectionCache): a new
  // transaction on a connection whose previous session ended cleanly; the
  // hello and STARTTLS are not repeated, MAIL is the first command.
  Step resume(const Extensions& extensions, bool tls_active);
  // The transaction ended with the reply to end of data, nothing failed, and
  // only QUIT is pending: the connection may be kept for another transaction.
  bool reusable() const { return state_ == State::quit && !connection_failed_ && transaction_done_; }
  // The message content as given to the constructor (see Step::content).
  std::string_view content() const { return content_; }
  // The message content (or any part of it) was sent.
  bool content_sent() const { return content_sent_; }

  // The outcome so far; recipients in the order given, only those with a final answer.
  AttemptResult result() const;

 private:
  enum class State { greeting, ehlo, helo, starttls, tls_handshake, transaction, content, quit, closed };
  enum class Expect { mail, rcpt, data };
  struct Pending {
    Expect what;
    std::size_t index = 0;  // recipient index for Expect::rcpt
  };

  Step on_greeting(const ServerReply& reply);
  Step on_ehlo(const ServerReply& reply);
  Step on_helo(const ServerReply& reply);
  Step on_starttls(const ServerReply& reply);
  Step on_transaction_reply(const ServerReply& reply);
  Step on_content_reply(const ServerReply& reply);

  Step after_hello();
  Step begin_transaction();
  Step next_rcpt_or_data();
  Step send_content();
  Step fail(std::string error, bool say_quit = true);
  Step protocol_error(std::string_view stage, const ServerReply& reply);
  Step quit();
  void set_all(int code, const std::string& text);
  void set_accepted(const ServerReply& reply);
  std::string mail_command() const;
  std::string rcpt_command(std::size_t index) const;

  Settings settings_;
  Transaction txn_;
  std::string_view content_;
  State state_ = State::greeting;
  Extensions ext_;
  bool tls_active_ = false;
  bool pipelining_ = false;
  std::vector<Pending> pending_;  // replies awaited for the commands sent, in order
  std::size_t pending_pos_ = 0;
  std::size_t next_rcpt_ = 0;  // without pipelining: the next recipient to send
  bool mail_refused_ = false;
  ServerReply mail_reply_;
  std::vector<bool> accepted_;
  std::vector<std::optional<RecipientResult>> results_;
  bool empty_data_sent_ = false;  // 354 although nothing was accepted: an empty message was ended
  bool connection_failed_ = false;
  bool stop_before_mail_ = false;
  bool transaction_done_ = false;
  bool content_sent_ = false;
  std::string error_;
};

std::string_view to_string(SmtpClientSession::Wait wait);

}  // namespace mxgate::delivery
