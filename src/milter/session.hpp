// The MTA side of one milter conversation as a pure state machine: given a
// received message it produces the bytes to send at each step and consumes
// the milter's reply bytes, like the SMTP session (src/smtp/session.hpp).  It
// never touches a socket or a clock; the coroutine shell in
// src/milter/client.cpp performs what it asks for.  Wire format and sources:
// src/milter/codec.hpp (mfdef.h, milter-protocol.txt, Postfix milter8.c).
//
// The conversation, in order (each command preceded by its SMFIC_MACRO):
//   SMFIC_OPTNEG      we offer kOfferedActions and kOfferedProtocol; the
//                     milter answers what it wants (version 2..6)
//   SMFIC_CONNECT     unless SMFIP_NOCONNECT
//   SMFIC_HELO        unless SMFIP_NOHELO or the message has no HELO name
//   SMFIC_MAIL        unless SMFIP_NOMAIL
//   SMFIC_RCPT        per recipient, unless SMFIP_NORCPT
//   SMFIC_DATA        unless SMFIP_NODATA or the milter speaks version < 4
//   SMFIC_HEADER      per header field, unless SMFIP_NOHDRS
//   SMFIC_EOH         unless SMFIP_NOEOH
//   SMFIC_BODY        per 65535-byte chunk, unless SMFIP_NOBODY
//   SMFIC_BODYEOB     always: modifications, then the final reply
//   SMFIC_QUIT        always (SMFIC_ABORT first when the milter decided
//                     in the middle of a message, as Sendmail does)
// Macros are sent even for a step the milter asked us to leave out (Postfix
// does the same: libmilter keeps them for later steps): stage 'C' j, _,
// {daemon_name}, v, {client_addr}, {client_name}, {client_port}; 'M' i,
// {mail_addr}; 'R' i, {rcpt_addr}; 'T', 'N' and 'E' i.  Empty values are not
// sent.
//
// Replies:
//   - a step whose SMFIP_NR_* bit the milter set gets no reply and is not
//     waited for; SMFIR_PROGRESS is counted (the shell extends its deadline)
//     and otherwise ignored; SMFIR_QUARANTINE may come at any step and does
//     not end it (as in Postfix);
//   - SMFIR_CONTINUE goes on; SMFIR_SKIP skips the rest of the steps of the
//     same kind (body chunks, header fields, recipients) and goes on;
//   - the first SMFIR_ACCEPT, REJECT, TEMPFAIL, DISCARD or REPLYCODE ends the
//     conversation with that verdict.  SMFIR_SHUTDOWN and SMFIR_CONN_FAIL are
//     tempfail (with a note).  DISCARD for CONNECT or HELO is ignored with a
//     note (Postfix does so).  A verdict for one recipient applies to the
//     whole message: we call milters after DATA, when one reply answers for
//     every recipient (a note says so when there are several);
//   - at SMFIC_BODYEOB the milter may first send modifications: header
//     changes (SMFIR_ADDHEADER, INSHEADER, CHGHEADER) are collected into
//     MilterResult::header_changes; body replacement and recipient or sender
//     changes are not offered, and if sent anyway they are ignored with a
//     note.  Modifications at any other step are a protocol error, as in
//     Postfix.
//
// Header values.  Sent: the text after the colon with line folds as "\n"
// (Sendmail's and Postfix's form), one leading space removed unless the
// milter negotiated SMFIP_HDR_LEADSPC.  Received: HeaderChange::value is the
// text to put after "name:", CRLF line folds, with the one space an MTA
// inserts without SMFIP_HDR_LEADSPC already added; a line break in a value
// must be followed by white space (a fold), otherwise the reply is a protocol
// error, since it would smuggle in a header field.
//
// Limits: kMaxHeaderChanges changes and kMaxHeaderChangeBytes bytes of names
// and values (past either: an error); kMaxNotes notes (then one more saying
// how many were left out); a header field longer than what fits one packet (kMaxBodyChunk) is
// an error, as is a NUL byte in a header field or the envelope.
//
// Error policy: receive() never throws; a malformed or unexpected reply, an
// early end of the connection or an unsendable message ends the session with
// an error (result() answers it; nothing more is sent); the caller applies
// its failure policy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "milter/codec.hpp"
#include "util/result.hpp"

namespace mxgate::milter {

struct MilterMessage {
  std::string client_address;  // IP literal
  std::uint16_t client_port = 0;
  std::string client_name;  // reverse DNS name or "[ip]" when unknown
  std::string helo;
  std::string sender;  // without <>; empty for the null sender
  std::vector<std::string> recipients;
  std::string content;       // the message, CRLF line ends, headers then body
  std::string queue_id;      // sent as macro "i"
  std::string our_hostname;  // macro "j"
};

struct HeaderChange {
  enum class Kind { add, insert, change } kind = Kind::add;
  // insert: the position, 0 = top; change: which field of that name, 1-based
  // (0 is read as 1, as Sendmail does).
  std::size_t index = 0;
  std::string name;
  // The text after "name:" (leading white space included), CRLF line folds;
  // empty in a change deletes the field.
  std::string value;
};

struct MilterResult {
  enum class Action { accept, reject, tempfail, discard, quarantine } action = Action::accept;
  std::string reply;  // a custom SMTP reply from SMFIR_REPLYCODE ("550 5.7.1 Virus found"), else empty
  std::string quarantine_reason;  // SMFIR_QUARANTINE
  std::vector<HeaderChange> header_changes;
  std::vector<std::string> notes;  // things received and ignored (body replacement, recipient changes)
};

// The header block of a message, split the same way for sending it to a
// milter and for applying header changes (apply_header_changes).  A field is
// a line "name:" (white space allowed before the colon) and the lines after
// it that start with SP or HTAB.  The block ends at the empty line or at the
// first line that is not a field (no colon, a name outside printable
// US-ASCII, a continuation line before any field); then the body is that
// line and what follows, as Postfix reads such a message.  Line ends are CRLF
// or a bare LF.
struct HeaderBlock {
  struct Field {
    std::string_view name;   // without the white space before the colon
    std::string_view value;  // after the colon up to the field's last line end, folds included
    std::string_view raw;    // the whole field with its line ends
  };
  std::vector<Field> fields;
  std::string_view rest;  // everything after the last field: the empty line and body, or the body
  std::string_view body;  // the body: after the empty line, or from the first non-field line
};
HeaderBlock split_header_block(std::string_view content);

class MilterSession {
 public:
  static constexpr std::uint32_t kOfferedActions =
      smfif::kAddHeaders | smfif::kChangeHeaders | smfif::kQuarantine;
  // Every step we can leave out, every reply the milter may leave out, SKIP
  // and HDR_LEADSPC; not SMFIP_RCPT_REJ (we have no refused recipients) and
  // not SMFIP_MDS_* (larger packets).
  static constexpr std::uint32_t kOfferedProtocol =
      smfip::kNoConnect | smfip::kNoHelo | smfip::kNoMail | smfip::kNoRecipient | smfip::kNoBody |
      smfip::kNoHeaders | smfip::kNoEndOfHeaders | smfip::kNoReplyHeader | smfip::kNoUnknown |
      smfip::kNoData | smfip::kSkip | smfip::kNoReplyConnect | smfip::kNoReplyHelo | smfip::kNoReplyMail |
      smfip::kNoReplyRecipient | smfip::kNoReplyData | smfip::kNoReplyUnknown | smfip::kNoReplyEndOfHeaders |
      smfip::kNoReplyBody | smfip::kHeaderLeadingSpace;
  static constexpr std::size_t kMaxHeaderChanges = 1000;
  static constexpr std::size_t kMaxHeaderChangeBytes = std::size_t{1} << 20;
  static constexpr std::size_t kMaxNotes = 20;
  // advance() returns once this much output has piled up (body chunks the
  // milter does not answer), so the shell writes in bounded pieces.
  static constexpr std::size_t kMaxOutputPerStep = 4 * (kMaxBodyChunk + 5);

  // The session reads message until it is done: keep it alive.
  explicit MilterSession(const MilterMessage& message);

  enum class Next {
    write,  // write output, then call advance() again
    read,   // write output, then read, call receive() (or receive_eof()), then advance()
    close,  // write output (maybe empty), then close the connection: result() is ready
  };
  struct Step {
    std::string output;
    Next next = Next::read;
  };
  Step advance();

  // The milter's bytes, in any cut.
  void receive(std::string_view bytes);
  void receive_eof();

  // Precondition: advance() returned Next::close.
  const Result<MilterResult>& result() const { return result_; }
  bool finished() const { return finished_; }

  // How many SMFIR_PROGRESS replies came so far.
  std::uint64_t progress_count() const { return progress_; }
  // The command whose reply is awaited ("SMFIC_BODYEOB"), or "" when none.
  std::string awaited() const;
  // What negotiation agreed (0 before).
  std::uint32_t version() const { return version_; }
  std::uint32_t actions() const { return actions_; }
  std::uint32_t protocol() const { return protocol_; }

 private:
  enum class Stage {
    start,
    connect,
    helo,
    mail,
    recipients,
    data,
    headers,
    end_of_headers,
    body,
    end_of_body,
    quit,
    closed
  };

  bool wants(std::uint32_t no_step_bit) const { return (protocol_ & no_step_bit) == 0; }
  bool replies(std::uint32_t no_reply_bit) const { return (protocol_ & no_reply_bit) == 0; }
  // Appends packet to out; when the milter answers it, waits for that.
  void send(std::string& out, char command, const std::string& packet, bool reply_expected);
  void send_macros(std::string& out, char for_command, const Macros& macros);
  Macros id_macros() const;
  // Appends the next packet(s) of the current stage to out, or moves to the
  // next stage.
  void next_in_stage(std::string& out);
  void handle(const Packet& packet);
  void handle_negotiation(const Reply& reply, const std::string& name);
  void handle_modification(Reply reply, const std::string& name);
  void verdict(MilterResult::Action action, std::string reply = {});
  void fail(std::string message);
  void finish();
  void note(std::string text);
  Result<void> check_message() const;

  const MilterMessage& message_;
  HeaderBlock headers_;
  Stage stage_ = Stage::start;
  std::size_t position_ = 0;      // recipient, header field or body offset in the current stage
  char awaiting_ = 0;             // the command whose reply we wait for, 0 for none
  bool decided_ = false;          // a verdict came: send ABORT (maybe) and QUIT
  bool message_started_ = false;  // MAIL or a later step was sent (or skipped)
  bool end_of_body_sent_ = false;
  bool finished_ = false;
  PacketDecoder decoder_;
  std::uint32_t version_ = 0, actions_ = 0, protocol_ = 0;
  std::uint64_t progress_ = 0;
  bool quarantined_ = false;
  std::size_t change_bytes_ = 0;
  std::size_t ignored_notes_ = 0;
  std::size_t replaced_body_packets_ = 0;
  std::size_t replaced_body_bytes_ = 0;
  MilterResult outcome_;
  Result<MilterResult> result_ = make_error("the milter conversation has not ended");
};

}  // namespace mxgate::milter
