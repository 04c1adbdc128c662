// The wire format of the Sendmail milter protocol, version 6, MTA side: the
// packet framing, an encoder for every command an MTA sends and a decoder for
// every reply a milter sends.  Pure: no I/O, no clock, no global state.
//
// There is no RFC.  Sources: Sendmail's libmilter headers
// include/libmilter/mfdef.h (command and reply letters, SMFIF_* actions,
// SMFIP_* protocol bits, MILTER_CHUNK_SIZE) and mfapi.h; Todd Vierling's
// "The Sendmail Milter Protocol, Version 2" (doc/milter-protocol.txt of
// sendmail-pmilter: packet layouts); Postfix's src/milter/milter8.c (what a
// second MTA does with each reply, version 6 details).
//
// Framing, both directions:
//   uint32  len      big-endian, the size of what follows: command + data
//   char    cmd      the command (MTA -> milter) or reply (milter -> MTA) letter
//   char    data[len - 1]
// Strings inside data are NUL-terminated; integers are big-endian.
//
// Limits:
//   kMaxBodyChunk      65535 bytes of body per SMFIC_BODY (MILTER_CHUNK_SIZE);
//   kMaxPacketLength   the largest reply packet the decoder accepts: its
//                      length field (command byte included) may be at most
//                      64 KiB + 4 KiB = 69632.  libmilter sends at most
//                      MILTER_CHUNK_SIZE bytes of body per SMFIR_REPLBODY and
//                      header replies are an index, a name and a value; we do
//                      not offer SMFIP_MDS_256K/1M, so no milter may send
//                      more.  69632 is accepted, 69633 is an error.
//
// Error policy: encoders are total (their string arguments must not hold NUL
// bytes, except body chunks: the session checks that before encoding);
// decoders never throw and answer every malformed input with an Error whose
// message is one printable line.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/quoted.hpp"
#include "util/result.hpp"

namespace mxgate::milter {

// The protocol version we speak (SMFI_PROT_VERSION in mfdef.h).
inline constexpr std::uint32_t kProtocolVersion = 6;

// Commands, MTA to milter (SMFIC_* in mfdef.h).
namespace smfic {
inline constexpr char kAbort = 'A';
inline constexpr char kBody = 'B';
inline constexpr char kConnect = 'C';
inline constexpr char kMacro = 'D';
inline constexpr char kEndOfBody = 'E';  // SMFIC_BODYEOB
inline constexpr char kHelo = 'H';
inline constexpr char kQuitNewConnection = 'K';  // never sent by us
inline constexpr char kHeader = 'L';
inline constexpr char kMail = 'M';
inline constexpr char kEndOfHeaders = 'N';  // SMFIC_EOH
inline constexpr char kOptionNegotiation = 'O';
inline constexpr char kQuit = 'Q';
inline constexpr char kRecipient = 'R';
inline constexpr char kData = 'T';
inline constexpr char kUnknown = 'U';  // never sent by us
}  // namespace smfic

// Replies, milter to MTA (SMFIR_* in mfdef.h).
namespace smfir {
inline constexpr char kAddRecipient = '+';
inline constexpr char kDeleteRecipient = '-';
inline constexpr char kAddRecipientWithArgs = '2';  // SMFIR_ADDRCPT_PAR
inline constexpr char kShutdown = '4';              // 421, close the SMTP session
inline constexpr char kAccept = 'a';
inline constexpr char kReplaceBody = 'b';
inline constexpr char kContinue = 'c';
inline constexpr char kDiscard = 'd';
inline constexpr char kChangeFrom = 'e';
inline constexpr char kConnectionFailure = 'f';  // SMFIR_CONN_FAIL
inline constexpr char kAddHeader = 'h';
inline constexpr char kInsertHeader = 'i';
inline constexpr char kSetSymbolList = 'l';  // only inside the negotiation reply
inline constexpr char kChangeHeader = 'm';
inline constexpr char kProgress = 'p';
inline constexpr char kQuarantine = 'q';
inline constexpr char kReject = 'r';
inline constexpr char kSkip = 's';
inline constexpr char kTempfail = 't';
inline constexpr char kReplyCode = 'y';
inline constexpr char kOptionNegotiation = 'O';
}  // namespace smfir

// Actions the MTA allows, the milter requests (SMFIF_* in mfapi.h).
namespace smfif {
inline constexpr std::uint32_t kAddHeaders = 0x001;
inline constexpr std::uint32_t kChangeBody = 0x002;
inline constexpr std::uint32_t kAddRecipients = 0x004;
inline constexpr std::uint32_t kDeleteRecipients = 0x008;
inline constexpr std::uint32_t kChangeHeaders = 0x010;
inline constexpr std::uint32_t kQuarantine = 0x020;
inline constexpr std::uint32_t kChangeFrom = 0x040;
inline constexpr std::uint32_t kAddRecipientsWithArgs = 0x080;
inline constexpr std::uint32_t kSetSymbolList = 0x100;
}  // namespace smfif

// Protocol steps (SMFIP_* in mfdef.h): in the MTA's offer, what it is able to
// leave out; in the milter's answer, what it wants left out.
namespace smfip {
inline constexpr std::uint32_t kNoConnect = 0x000001;
inline constexpr std::uint32_t kNoHelo = 0x000002;
inline constexpr std::uint32_t kNoMail = 0x000004;
inline constexpr std::uint32_t kNoRecipient = 0x000008;
inline constexpr std::uint32_t kNoBody = 0x000010;
inline constexpr std::uint32_t kNoHeaders = 0x000020;
inline constexpr std::uint32_t kNoEndOfHeaders = 0x000040;
inline constexpr std::uint32_t kNoReplyHeader = 0x000080;  // SMFIP_NR_HDR (= SMFIP_NOHREPL)
inline constexpr std::uint32_t kNoUnknown = 0x000100;
inline constexpr std::uint32_t kNoData = 0x000200;
inline constexpr std::uint32_t kSkip = 0x000400;               // the MTA understands SMFIR_SKIP
inline constexpr std::uint32_t kRecipientRejected = 0x000800;  // SMFIP_RCPT_REJ
inline constexpr std::uint32_t kNoReplyConnect = 0x001000;
inline constexpr std::uint32_t kNoReplyHelo = 0x002000;
inline constexpr std::uint32_t kNoReplyMail = 0x004000;
inline constexpr std::uint32_t kNoReplyRecipient = 0x008000;
inline constexpr std::uint32_t kNoReplyData = 0x010000;
inline constexpr std::uint32_t kNoReplyUnknown = 0x020000;
inline constexpr std::uint32_t kNoReplyEndOfHeaders = 0x040000;
inline constexpr std::uint32_t kNoReplyBody = 0x080000;
inline constexpr std::uint32_t kHeaderLeadingSpace = 0x100000;  // SMFIP_HDR_LEADSPC
}  // namespace smfip

// Address families of SMFIC_CONNECT (SMFIA_* in mfdef.h).
namespace smfia {
inline constexpr char kUnknown = 'U';
inline constexpr char kUnix = 'L';
inline constexpr char kInet = '4';
inline constexpr char kInet6 = '6';
}  // namespace smfia

inline constexpr std::size_t kMaxBodyChunk = 65535;
inline constexpr std::uint32_t kMaxPacketLength = (64u << 10) + (4u << 10);

// "SMFIC_CONNECT", "SMFIR_ACCEPT", ...: for messages; "0x07" for an unknown byte.
std::string command_name(char command);
std::string reply_name(char reply);

// Text from a milter or a message inside our messages: in double quotes,
// with \" \\ and \xNN for anything outside 0x20..0x7e, cut after
// kMaxQuoted input bytes with "..." after.
inline constexpr std::size_t kMaxQuoted = kMaxQuotedBytes;
std::string quote_text(std::string_view text);

// ---------------------------------------------------------------------------
// Encoders: each returns one whole packet (length, command, data).

// Any packet.  Precondition: data.size() < 2^32 - 1.
std::string encode_packet(char command, std::string_view data);

// SMFIC_OPTNEG: version, actions we allow, protocol steps we can leave out.
std::string encode_option_negotiation(std::uint32_t version, std::uint32_t actions, std::uint32_t protocol);

// SMFIC_MACRO: the command letter the macros belong to, then name NUL value
// NUL for each.  Names as Sendmail writes them: one letter bare ("i", "j",
// "_"), longer names in braces ("{daemon_name}").
using Macros = std::vector<std::pair<std::string, std::string>>;
std::string encode_macros(char for_command, const Macros& macros);

// SMFIC_CONNECT: hostname NUL, family, then for '4', '6' and 'L' the port
// (2 bytes, big-endian) and the address (IP literal or socket path) NUL;
// for 'U' (unknown) nothing after the family.
std::string encode_connect(std::string_view hostname, char family, std::uint16_t port,
                           std::string_view address);

// SMFIC_HELO: the HELO/EHLO argument NUL.
std::string encode_helo(std::string_view helo);

// SMFIC_MAIL / SMFIC_RCPT: "<address>" NUL (the address given without the
// brackets; empty for the null sender "<>"), then each ESMTP argument
// ("SIZE=1000", "BODY=8BITMIME") NUL.
std::string encode_mail(std::string_view sender, const std::vector<std::string>& esmtp_args = {});
std::string encode_recipient(std::string_view recipient, const std::vector<std::string>& esmtp_args = {});

// SMFIC_HEADER: name NUL value NUL.
std::string encode_header(std::string_view name, std::string_view value);

// SMFIC_BODY: raw bytes.  Precondition: chunk.size() <= kMaxBodyChunk.
std::string encode_body(std::string_view chunk);

// Commands without data.
std::string encode_data();            // SMFIC_DATA
std::string encode_end_of_headers();  // SMFIC_EOH
std::string encode_end_of_body();     // SMFIC_BODYEOB
std::string encode_abort();           // SMFIC_ABORT
std::string encode_quit();            // SMFIC_QUIT

// ---------------------------------------------------------------------------
// The packet decoder: takes the bytes a milter sends in any cut and yields
// whole packets (Beast's parser contract: feed bytes, need more, a packet, or
// a terminal error; feed_eof at the end).  Never touches a socket.
struct Packet {
  char command = 0;
  std::string data;
  bool operator==(const Packet&) const = default;
};

class PacketDecoder {
 public:
  enum class State { need_more, packet, failed };

  // Consumes bytes up to the end of one packet and returns how many (fewer
  // than given only when a packet is complete or the stream failed).  In
  // state packet, nothing is consumed until take() is called.
  std::size_t feed(std::string_view bytes);
  // The milter closed the connection: need_more turns into failed.
  void feed_eof();

  State state() const { return state_; }
  // The packet.  Precondition: state() == packet.  Afterwards: need_more.
  Packet take();
  // True when some bytes of the next packet have been consumed.
  bool mid_packet() const { return header_used_ > 0; }
  // Why it failed: "packet length 0", "packet length 70000 is over the
  // limit of 69632 bytes", "connection closed before the reply",
  // "connection closed in the middle of a packet".
  const std::string& error() const { return error_; }

 private:
  std::array<unsigned char, 4> header_{};
  std::size_t header_used_ = 0;
  std::uint32_t length_ = 0;  // of the packet being read, command included
  bool have_command_ = false;
  Packet packet_;
  State state_ = State::need_more;
  std::string error_;
};

// ---------------------------------------------------------------------------
// Reply decoding.  Each reply packet becomes a Reply; the fields that do not
// apply to its kind stay empty.
struct Reply {
  enum class Kind {
    negotiation,         // 'O'  version, actions, protocol (anything after them is ignored:
                         //      the SMFIF_SETSYMLIST lists, which we do not offer)
    continue_,           // 'c'
    accept,              // 'a'
    reject,              // 'r'
    tempfail,            // 't'
    discard,             // 'd'
    reply_code,          // 'y'  text: "550 5.7.1 Virus found" (see decode_reply)
    shutdown,            // '4'
    connection_failure,  // 'f'
    quarantine,          // 'q'  text: the reason
    add_header,          // 'h'  name, text: the value
    insert_header,       // 'i'  index, name, text
    change_header,       // 'm'  index, name, text (empty: delete)
    add_recipient,       // '+'  text: the address
    add_recipient_args,  // '2'  text: the address, args: ESMTP arguments (maybe empty)
    delete_recipient,    // '-'  text
    change_from,         // 'e'  text: the new sender, args: ESMTP arguments (maybe empty)
    replace_body,        // 'b'  text: body bytes (not NUL-terminated on the wire)
    progress,            // 'p'
    skip,                // 's'
  };
  Kind kind = Kind::continue_;
  std::uint32_t version = 0, actions = 0, protocol = 0;  // negotiation
  std::uint32_t index = 0;                               // insert_header, change_header
  std::string name;
  std::string text;
  std::string args;
};

// Decodes one reply packet.  Strings must be NUL-terminated, except that the
// last string of a packet may also end at the end of the packet (some milter
// libraries leave its NUL out); nothing may follow the last field, and
// replies without data ('c', 'a', 'r', 't', 'd', '4', 'f', 'p', 's') must
// have none (Postfix refuses them too).
//
// SMFIR_REPLYCODE: the text must be one or more SMTP reply lines separated by
// CRLF, each "4xx" or "5xx" with the same code, '-' after the code on all
// lines but the last and ' ' (or nothing) on the last, no control character
// but HTAB (RFC 5321 textstring), and
// when a line has an enhanced status code ("5.7.1") its class must match the
// code's first digit.  Sendmail treats the text as a format string, so
// libmilter has "%" doubled: "%%" becomes "%" and a single "%" is dropped,
// as Postfix does.
// Errors name the reply: "malformed SMFIR_REPLYCODE \"250 ok\"", "SMFIR_ACCEPT
// with 3 bytes of data", "unknown reply 0x7a", "SMFIR_ADDHEADER: missing NUL
// after the header name".
Result<Reply> decode_reply(const Packet& packet);

}  // namespace mxgate::milter
