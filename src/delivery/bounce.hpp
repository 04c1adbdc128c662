// Bounces: the delivery status notification (DSN, RFC 3464) that returns a
// message's permanently failed recipients to its sender, as a
// multipart/report (RFC 6522) of three parts:
//
//   1. text/plain: a short explanation and "<recipient>: <reply>" per failure;
//   2. message/delivery-status: Reporting-MTA, X-Mxgate-Queue-ID and
//      Arrival-Date, then per recipient Final-Recipient, Action: failed,
//      Status, Remote-MTA (when known) and Diagnostic-Code;
//   3. text/rfc822-headers: the original header section only (not the body),
//      which keeps bounces small and never re-sends the content (RFC 6522 §3
//      allows headers-only return).
//
// Header fields: From: MAILER-DAEMON@<hostname>, To: <original sender>,
// Subject: Undelivered Mail Returned to Sender, Date, a fresh Message-ID,
// Auto-Submitted: auto-replied (RFC 3834), MIME-Version.
//
// Internationalisation (RFC 6533) - the choice made here:
//   - when every address is ASCII and either the original was not SMTPUTF8
//     or its headers and the replies are ASCII too, the report uses the
//     ASCII types (delivery-status, text/rfc822-headers) and is 7-bit; any
//     stray non-ASCII byte in a reply or header (only possible from a
//     non-conforming peer) becomes '?';
//   - otherwise it uses report-type=global-delivery-status,
//     message/global-delivery-status, message/global-headers and
//     text/plain; charset=utf-8, all Content-Transfer-Encoding: 8bit, with
//     "Final-Recipient: utf-8; <address>" for a non-ASCII address.
//   Bounce::smtputf8 and Bounce::eight_bit then say how it must be relayed.
//
// Invariants of the result (unit-tested): CRLF line ends only, no bare CR or
// LF, no line over 998 octets (RFC 5322 §2.1.1), and no inserted value can
// start a header field or a MIME part: CR, LF and other control characters
// are stripped from every inserted value, long diagnostics are folded at
// spaces (hard-split only if one word exceeds a line) and cut at
// kMaxDiagnosticBytes, and the boundary is checked against the content.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "queue/envelope.hpp"

namespace mxgate::delivery {

// One recipient to report.  reply is what the remote server said
// ("550 5.1.1 No such user", multi-line replies may keep their CRLFs) or a
// local reason ("5.4.7 delivery time expired; last error: ...").  The DSN
// Status is the reply's enhanced status code when it is a permanent one
// (5.x.y), otherwise 5.0.0: for a message given up after max_lifetime, pass
// a reply such as "5.4.7 message expired after 5 days; last error: <last
// reply>" to report something more precise than 5.0.0.  remote_mta is the
// host name of the server that answered, empty when none did.
struct FailedRecipient {
  std::string recipient;
  std::string reply;
  std::string remote_mta;
};

struct Bounce {
  std::string content;     // the whole message, CRLF line ends, headers first
  bool smtputf8 = false;   // the To: address is non-ASCII: relay with MAIL ... SMTPUTF8
  bool eight_bit = false;  // content holds non-ASCII (RFC 6533 types): relay with BODY=8BITMIME
};

// Limits, in octets.
constexpr std::size_t kMaxDiagnosticBytes = 2000;           // per reply; longer ones end in "..."
constexpr std::size_t kMaxReturnedHeaderBytes = 64 * 1024;  // whole header fields only, then stop

// False for the null sender: a bounce is never sent to "<>" (RFC 5321
// §4.5.5, §6.1), which is also what stops bounce loops.
bool should_bounce(const queue::Envelope& original);

// Builds the DSN for the failed recipients of original (whose content is
// the spooled message, CRLF line ends).  reporting_hostname is our own name
// (characters outside [A-Za-z0-9.-_] are dropped).  now gives Date and a
// part of Message-ID; the rest of Message-ID comes from queue::new_queue_id().
// Callers check should_bounce() first and pass at least one recipient.
Bounce make_bounce(const queue::Envelope& original, std::string_view original_content,
                   const std::vector<FailedRecipient>& failed, std::string_view reporting_hostname,
                   std::chrono::system_clock::time_point now);

// The envelope to spool the bounce under: null reverse-path (RFC 5321
// §4.5.5), the original sender as the only recipient, the SMTPUTF8 and
// 8BITMIME flags from bounce, client "127.0.0.1" and helo the hostname.
queue::Envelope bounce_envelope(const queue::Envelope& original, const Bounce& bounce, std::string id,
                                std::string_view reporting_hostname, std::int64_t now_unix);

// The DSN Status for a reply: its enhanced code when it is 5.x.y, else 5.0.0.
std::string failure_status(std::string_view reply);

// "Thu, 13 Feb 2025 10:00:00 +0000" (RFC 5322 §3.3, in UTC).
std::string rfc5322_date(std::int64_t unix_seconds);

}  // namespace mxgate::delivery
