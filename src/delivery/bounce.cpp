// See bounce.hpp for the report's structure and the internationalisation choice.
#include "delivery/bounce.hpp"

#include <time.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "queue/spool.hpp"

namespace mxgate::delivery {
namespace {

constexpr std::size_t kMaxLine = 998;  // octets before CRLF, RFC 5322 §2.1.1
constexpr std::size_t kSoftLine = 78;  // preferred, RFC 5322 §2.1.1
constexpr std::string_view kCrlf = "\r\n";

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

bool is_continuation_byte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// The longest prefix of s no longer than n that does not split a UTF-8
// sequence (falls back to n when s is not UTF-8 there).
std::size_t utf8_cut(std::string_view s, std::size_t n) {
  if (n >= s.size()) return s.size();
  std::size_t cut = n;
  while (cut > 0 && is_continuation_byte(s[cut])) --cut;
  return cut > 0 ? cut : n;
}

// Replaces every byte that is not part of a well-formed UTF-8 sequence
// (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF) with '?',
// so that the 8-bit parts of a global report are valid UTF-8.
void repair_utf8(std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      ok = k == 1 ? (b >= lo && b <= hi) : is_continuation_byte(s[i + k]);
    }
    if (ok) {
      i += len;
    } else {
      s[i++] = '?';
    }
  }
}

// One line of text from an inserted value: runs of CR/LF become one space,
// other control characters are dropped, and in ASCII mode non-ASCII bytes
// become '?'.  Leading and trailing spaces are trimmed.
std::string clean(std::string_view value, bool allow_utf8) {
  std::string out;
  out.reserve(value.size());
  bool in_break = false;
  for (char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\r' || c == '\n') {
      if (!in_break) out.push_back(' ');
      in_break = true;
      continue;
    }
    in_break = false;
    if (c >= 0x80) {
      out.push_back(allow_utf8 ? ch : '?');
    } else if (c == '\t') {
      out.push_back(' ');
    } else if (c >= 0x20 && c != 0x7f) {
      out.push_back(ch);
    }
  }
  if (allow_utf8) repair_utf8(out);
  const auto first = out.find_first_not_of(' ');
  if (first == std::string::npos) return {};
  out.erase(out.find_last_not_of(' ') + 1);
  out.erase(0, first);
  return out;
}

std::string limit(std::string text, std::size_t max) {
  if (text.size() <= max) return text;
  text.resize(utf8_cut(text, max - 3));
  text.append("...");
  return text;
}

std::string clean_hostname(std::string_view name) {
  std::string out;
  for (char c : name.substr(0, 255)) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') out.push_back(c);
  }
  return out.empty() ? "localhost" : out;
}

// Appends first + text as one logical line, folded (RFC 5322 §2.2.3) before
// a space once a line would pass kSoftLine, and split with an inserted
// space only when a single word would pass kMaxLine.  text holds no CR/LF.
void append_folded(std::string& out, std::string_view first, std::string_view text) {
  std::string line(first);
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t next_space = text.find(' ', i + 1);
    std::string_view word = text.substr(i, next_space == std::string_view::npos ? text.npos : next_space - i);
    i += word.size();
    if (word.front() == ' ' && line.size() + word.size() > kSoftLine && !line.empty() && line != " ") {
      out.append(line).append(kCrlf);
      line.clear();  // word's leading space is the folding white space
    }
    while (line.size() + word.size() > kMaxLine) {
      const std::size_t take = utf8_cut(word, kMaxLine - line.size());
      line.append(word.substr(0, take));
      out.append(line).append(kCrlf);
      line = " ";
      word.remove_prefix(take);
    }
    line.append(word);
  }
  out.append(line).append(kCrlf);
}

// The original's header section: lines up to the first empty one, whole
// fields only, at most kMaxReturnedHeaderBytes, each line at most kMaxLine.
std::string header_section(std::string_view content, bool allow_utf8) {
  std::string out;
  std::string field;  // the current field with its continuation lines
  // Appends the field if it fits; false (stop) once one does not.
  auto flush = [&] {
    const bool fits = out.size() + field.size() <= kMaxReturnedHeaderBytes;
    if (fits) out.append(field);
    field.clear();
    return fits;
  };
  bool room = true;
  while (!content.empty() && room) {
    auto end = content.find(kCrlf);
    std::string_view raw = content.substr(0, end);
    content.remove_prefix(end == std::string_view::npos ? content.size() : end + kCrlf.size());
    if (raw.empty()) break;  // end of the header section
    std::string line;
    line.reserve(raw.size());
    for (char ch : raw) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '\r' || c == '\n') {
        line.push_back(' ');  // a bare CR/LF, which the server never accepts anyway
      } else {
        line.push_back(c >= 0x80 && !allow_utf8 ? '?' : ch);
      }
    }
    line.resize(utf8_cut(line, kMaxLine));
    const bool continuation = line.front() == ' ' || line.front() == '\t';
    if (!continuation && !field.empty()) room = flush();
    if (room) field.append(line).append(kCrlf);
  }
  if (room) flush();
  if (allow_utf8) repair_utf8(out);
  return out;
}

// True when the reply starts with an SMTP reply code ("550 ", "550-", "550").
bool has_reply_code(std::string_view reply) {
  return reply.size() >= 3 && reply[0] >= '2' && reply[0] <= '5' &&
         std::isdigit(static_cast<unsigned char>(reply[1])) &&
         std::isdigit(static_cast<unsigned char>(reply[2])) &&
         (reply.size() == 3 || reply[3] == ' ' || reply[3] == '-');
}

// An enhanced status code (RFC 3463: class "." 1*3digit "." 1*3digit) at the
// start of s, followed by a space or the end; empty if none.
std::string_view enhanced_code_at(std::string_view s) {
  std::size_t i = 0;
  auto digits = [&](std::size_t min, std::size_t max) {
    const std::size_t start = i;
    while (i < s.size() && i - start < max && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    return i - start >= min;
  };
  if (!(digits(1, 1) && i < s.size() && s[i++] == '.' && digits(1, 3) && i < s.size() && s[i++] == '.' &&
        digits(1, 3))) {
    return {};
  }
  if (i < s.size() && s[i] != ' ') return {};
  return s.substr(0, i);
}

std::string_view enhanced_code(std::string_view reply) {
  if (has_reply_code(reply)) reply.remove_prefix(std::min<std::size_t>(4, reply.size()));
  return enhanced_code_at(reply);
}

std::string boundary_for(std::string_view unique, std::string_view body) {
  std::string boundary = "=_mxgate_" + std::string(unique);
  for (unsigned n = 0; body.find(boundary) != std::string_view::npos; ++n) {
    boundary = "=_mxgate_" + std::string(unique) + "_" + std::to_string(n);
  }
  return boundary;
}

}  // namespace

bool should_bounce(const queue::Envelope& original) { return !original.sender.empty(); }

std::string failure_status(std::string_view reply) {
  const std::string_view code = enhanced_code(reply);
  if (!code.empty() && code.front() == '5') return std::string(code);
  return "5.0.0";
}

std::string rfc5322_date(std::int64_t unix_seconds) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  if (::gmtime_r(&t, &tm) == nullptr) return "Thu, 01 Jan 1970 00:00:00 +0000";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%s, %02d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday], tm.tm_mday,
                kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buffer;
}

Bounce make_bounce(const queue::Envelope& original, std::string_view original_content,
                   const std::vector<FailedRecipient>& failed, std::string_view reporting_hostname,
                   std::chrono::system_clock::time_point now) {
  const std::string host = clean_hostname(reporting_hostname);
  const std::int64_t now_unix =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();

  // The choice of types (see bounce.hpp).
  bool utf8_addresses = !is_ascii(original.sender);
  bool utf8_text = false;
  for (const auto& f : failed) {
    utf8_addresses = utf8_addresses || !is_ascii(f.recipient);
    utf8_text = utf8_text || !is_ascii(f.reply) || !is_ascii(f.remote_mta);
  }
  const std::string headers_ascii_check = header_section(original_content, true);
  utf8_text = utf8_text || !is_ascii(headers_ascii_check);
  const bool global = utf8_addresses || (original.smtputf8 && utf8_text);

  const std::string sender = clean(original.sender, global);
  const std::string charset = global ? "utf-8" : "us-ascii";
  const std::string cte = global ? "Content-Transfer-Encoding: 8bit\r\n" : "";

  // Part 1: for people.
  std::string text;
  text.append("This is the mail system at host ").append(host).append(".\r\n\r\n");
  text.append("Your message could not be delivered to one or more recipients.\r\n");
  text.append("It is attached below (headers only). The reasons are:\r\n\r\n");
  for (const auto& f : failed) {
    std::string reply = limit(clean(f.reply, global), kMaxDiagnosticBytes);
    if (reply.empty()) reply = "delivery failed";
    append_folded(text, "<" + clean(f.recipient, global) + ">: ", reply);
  }
  text.append("\r\nThis message was created automatically; please do not reply.\r\n");

  // Part 2: for programs (RFC 3464 §2.2, §2.3; RFC 6533 §3).
  std::string status;
  append_folded(status, "Reporting-MTA: dns; ", host);
  append_folded(status, "X-Mxgate-Queue-ID: ", clean(original.id, false));
  status.append("Arrival-Date: ").append(rfc5322_date(original.received_unix)).append(kCrlf);
  for (const auto& f : failed) {
    const std::string recipient = clean(f.recipient, global);
    const std::string reply = limit(clean(f.reply, global), kMaxDiagnosticBytes);
    const std::string mta = clean(f.remote_mta, global);
    status.append(kCrlf);
    append_folded(status, is_ascii(recipient) ? "Final-Recipient: rfc822; " : "Final-Recipient: utf-8; ",
                  recipient);
    status.append("Action: failed\r\n");
    status.append("Status: ").append(failure_status(f.reply)).append(kCrlf);
    if (!mta.empty()) append_folded(status, "Remote-MTA: dns; ", mta);
    if (!reply.empty()) {
      append_folded(status, has_reply_code(reply) ? "Diagnostic-Code: smtp; " : "Diagnostic-Code: X-mxgate; ",
                    reply);
    }
  }

  // Part 3: the original headers.
  const std::string returned = global ? headers_ascii_check : header_section(original_content, false);

  const std::string unique = queue::new_queue_id();
  const std::string boundary = boundary_for(unique, text + status + returned);

  std::string m;
  m.reserve(1024 + text.size() + status.size() + returned.size());
  m.append("From: MAILER-DAEMON@").append(host).append(" (Mail Delivery System)\r\n");
  append_folded(m, "To: ", "<" + sender + ">");
  m.append("Subject: Undelivered Mail Returned to Sender\r\n");
  m.append("Date: ").append(rfc5322_date(now_unix)).append(kCrlf);
  append_folded(m, "Message-ID: ", "<" + unique + ".bounce@" + host + ">");
  m.append("Auto-Submitted: auto-replied\r\n");
  m.append("MIME-Version: 1.0\r\n");
  m.append("Content-Type: multipart/report; report-type=")
      .append(global ? "global-delivery-status" : "delivery-status")
      .append(";\r\n\tboundary=\"")
      .append(boundary)
      .append("\"\r\n");
  m.append(cte);
  m.append("\r\nThis is a MIME-encapsulated message.\r\n\r\n");

  m.append("--").append(boundary).append(kCrlf);
  m.append("Content-Description: Notification\r\n");
  m.append("Content-Type: text/plain; charset=").append(charset).append(kCrlf).append(cte).append(kCrlf);
  m.append(text);
  m.append("\r\n--").append(boundary).append(kCrlf);
  m.append("Content-Description: Delivery report\r\n");
  m.append("Content-Type: message/")
      .append(global ? "global-delivery-status" : "delivery-status")
      .append(kCrlf);
  m.append(cte).append(kCrlf);
  m.append(status);
  m.append("\r\n--").append(boundary).append(kCrlf);
  m.append("Content-Description: Undelivered Message Headers\r\n");
  m.append("Content-Type: ").append(global ? "message/global-headers" : "text/rfc822-headers").append(kCrlf);
  m.append(cte).append(kCrlf);
  m.append(returned);
  m.append("\r\n--").append(boundary).append("--\r\n");

  Bounce bounce;
  bounce.smtputf8 = !is_ascii(sender);
  bounce.eight_bit = !is_ascii(m);
  bounce.content = std::move(m);
  return bounce;
}

queue::Envelope bounce_envelope(const queue::Envelope& original, const Bounce& bounce, std::string id,
                                std::string_view reporting_hostname, std::int64_t now_unix) {
  queue::Envelope e;
  e.id = std::move(id);
  e.sender.clear();  // null reverse-path
  e.recipients = {original.sender};
  e.smtputf8 = bounce.smtputf8;
  e.body_8bitmime = bounce.eight_bit;
  e.client_address = "127.0.0.1";
  e.helo = clean_hostname(reporting_hostname);
  e.received_unix = now_unix;
  return e;
}

}  // namespace mxgate::delivery
