// The SMTP server session as a pure state machine: bytes and events in,
// replies and the next thing to do out.  It never touches a socket, a file or
// a clock of its own, so every behaviour is unit-tested without I/O; the
// coroutine shell in src/server/ performs what it asks for.
//
// Implements RFC 5321 (commands, sequencing, replies), RFC 2920 PIPELINING
// (replies are batched until the buffered input is used up), RFC 1870 SIZE,
// RFC 6152 8BITMIME, RFC 2034 ENHANCEDSTATUSCODES, RFC 6531 SMTPUTF8, RFC 3030
// CHUNKING (BDAT) and the server side of RFC 3207 STARTTLS: input buffered
// behind STARTTLS is discarded (the CVE-2011-0411 class) and all SMTP state
// is forgotten once TLS is up.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "queue/envelope.hpp"
#include "smtp/message_framing.hpp"
#include "smtp/received_header.hpp"
#include "smtp/relay_policy.hpp"
#include "smtp/reply.hpp"

namespace mxgate::smtp {

struct SessionSettings {
  std::string hostname;
  config::TlsMode tls_mode = config::TlsMode::none;
  config::Limits limits;
  // Who may relay where; null accepts every recipient (protocol tests only).
  const RelayPolicy* relay = nullptr;
  // Each recipient a client outside relay_networks gives passes the shell's
  // RCPT-stage checks before it is accepted (Next::check_recipient).
  bool check_recipients = false;
};

// What the session needs from the world, injected so tests are deterministic.
class SessionEnvironment {
 public:
  virtual ~SessionEnvironment() = default;
  virtual std::chrono::system_clock::time_point now() = 0;
  virtual std::string new_queue_id() = 0;
  // A MAIL command from a client outside relay_networks: false when it is
  // over its message rate ([limits] max_message_rate_per_client).
  virtual bool admit_message(std::string_view client_ip) {
    (void)client_ip;
    return true;
  }
};

enum class Next {
  read,       // write the output, then read more input and call receive()
  start_tls,  // write the output (the 220), then handshake and call tls_established()
  store,      // write the output, store message(), then call stored()
  close,      // write the output, then close the connection
  check_recipient,  // write the output, check recipient_to_check(), then call recipient_checked()
};

struct Step {
  std::string output;  // replies to write first, possibly empty
  Next next = Next::read;
};

// Which RFC 5321 section 4.5.3.2 timeout the shell applies to the next read.
enum class Wait { command, data };

class Session {
 public:
  Session(SessionSettings settings, SessionEnvironment& environment, std::string client_ip);

  // "220 <hostname> ESMTP mxgate\r\n"; for implicit TLS, call after tls_established().
  std::string greeting() const;

  void receive(std::string_view bytes);
  Step advance();

  void tls_established(TlsInfo info);

  // Valid after Next::store until stored() is called.
  const queue::Envelope& envelope() const { return envelope_; }
  const std::string& content() const { return content_; }
  // Adds header fields (each ending in CRLF) right below our Received
  // field, e.g. the content filter's verdict; before store only.
  void add_header_fields(std::string_view fields);
  // Removes byte ranges [begin, end) of the content, e.g. header fields
  // forged with our authserv-id; before store only.  Ranges must be sorted
  // and disjoint; any that touch our Received field or run past the
  // content are ignored.
  void erase_content(const std::vector<std::pair<std::size_t, std::size_t>>& ranges);
  // Replaces the content with an edited copy (the content filter's subject
  // tag, a milter's header changes); before store only.  Our Received field
  // must be in the new header block unchanged (fields may come above it);
  // otherwise the edit is ignored.
  void replace_content(std::string content);
  // The client may relay (relay_networks): our own systems.
  bool relay_client() const { return relay_client_; }
  void stored(bool ok);
  // The message was refused after its content arrived (the content
  // filter's reject or tempfail): reply is written, the transaction ends.
  void refused(const Reply& reply);
  // After Next::check_recipient: the recipient waiting for the check (null
  // when none), and the check's outcome: no refusal accepts it (250), a
  // refusal is written instead and counts as an error (max_errors).
  const std::string* recipient_to_check() const { return pending_recipient_ ? &*pending_recipient_ : nullptr; }
  void recipient_checked(const std::optional<Reply>& refusal);

  // Events the shell reports; each returns the final reply to write before closing.
  std::string timed_out();
  std::string shutting_down();
  void disconnected();
  static std::string too_many_connections(std::string_view hostname);
  // [limits] max_connections_per_client / max_connection_rate_per_client.
  static std::string too_many_connections_from(std::string_view hostname, std::string_view client_ip);

  Wait waiting_for() const;
  // A MAIL transaction (or its content) is in progress: shutdown waits for it.
  bool in_transaction() const { return txn_.has_value(); }
  // Accepted MAIL commands so far, and the current transaction's reverse-path
  // (null outside a transaction): checks that start at the MAIL stage (SPF)
  // start once per transaction.
  std::uint64_t transactions_begun() const { return transactions_begun_; }
  const std::string* mail_from() const { return txn_ ? &txn_->sender : nullptr; }
  bool tls_active() const { return tls_.has_value(); }
  const std::optional<TlsInfo>& tls() const { return tls_; }
  const std::string& helo() const { return helo_; }
  std::size_t messages_accepted() const { return messages_; }
  // How the session ended ("quit", "timeout", "too many errors", ...); empty while open.
  const std::string& end_reason() const { return end_reason_; }

 private:
  enum class Phase { command, discard_line, data, bdat, closed };

  struct Transaction {
    std::string sender;
    std::vector<std::string> recipients;
    bool smtputf8 = false;
    bool body_8bitmime = false;
    bool rcpt_attempted = false;    // some RCPT was given, even if refused
    bool content_started = false;  // DATA or a first BDAT began (Received header written)
    bool used_bdat = false;
    bool too_big = false;
    std::uint64_t bdat_size = 0;
    std::uint64_t declared_size = 0;  // MAIL SIZE= (RFC 1870), 0 when not given
    LineEndingChecker bdat_line_endings;
  };

  struct CommandSpec;
  static const CommandSpec* find_command(std::string_view verb);

  std::string_view buffered() const { return std::string_view(in_).substr(pos_); }
  void handle_line(std::string_view line);
  void reply(int code, std::string_view enhanced, std::string_view text);
  void reply_error(int code, std::string_view enhanced, std::string_view text);
  void close_with(std::string_view reply_text, std::string reason);
  bool ready_for_mail_command(bool needs_transaction);
  void begin_content();
  // Ends the content of a transaction: true when the message is to be
  // stored, false when it was refused (the reply is already written).
  bool finish_message(bool bare_newline);
  // Forgets the transaction and its content after the final reply.
  void end_transaction();
  Step take(Next next);

  void cmd_ehlo(std::string_view args);
  void cmd_helo(std::string_view args);
  void cmd_mail(std::string_view args);
  void cmd_rcpt(std::string_view args);
  void cmd_data(std::string_view args);
  void cmd_bdat(std::string_view args);
  void cmd_rset(std::string_view args);
  void cmd_noop(std::string_view args);
  void cmd_quit(std::string_view args);
  void cmd_vrfy(std::string_view args);
  void cmd_expn(std::string_view args);
  void cmd_help(std::string_view args);
  void cmd_starttls(std::string_view args);
  void cmd_auth(std::string_view args);
  void no_recipients_error();
  bool greet_args_ok(std::string_view args, std::string_view verb);

  SessionSettings settings_;
  SessionEnvironment& environment_;
  std::string client_ip_;
  bool relay_client_ = true;  // inside relay_networks: any recipient domain

  std::string in_;
  std::size_t pos_ = 0;
  std::string out_;
  Phase phase_ = Phase::command;
  bool start_tls_ = false;

  std::string helo_;
  bool ehlo_ = false;
  std::optional<TlsInfo> tls_;
  std::optional<Transaction> txn_;
  std::optional<std::string> pending_recipient_;  // a RCPT waiting for Next::check_recipient
  std::uint64_t transactions_begun_ = 0;
  DataDecoder decoder_;
  std::uint64_t bdat_remaining_ = 0;
  std::uint64_t bdat_chunk_size_ = 0;
  bool bdat_last_ = false;
  std::optional<Reply> bdat_refusal_;  // reply owed once a refused chunk is read

  queue::Envelope envelope_;
  std::string content_;
  std::size_t header_size_ = 0;

  unsigned errors_ = 0;
  std::size_t messages_ = 0;
  std::string end_reason_;
};

}  // namespace mxgate::smtp
