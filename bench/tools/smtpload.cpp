// smtpload: an SMTP load generator for benchmarking mxgate on loopback.
//
// Contract
// - Load mode: runs --total sessions, --sessions at a time (a finished session
//   is replaced until --total have run).  Each session connects, reads the
//   greeting, sends EHLO, optionally STARTTLS + handshake + EHLO (or starts
//   with TLS: --tls implicit), sends --messages messages of --size bytes
//   (MAIL, RCPT, DATA, dot-stuffed content, "."; MAIL/RCPT/DATA as one group
//   with --pipelining when PIPELINING is advertised), then QUIT.  Every reply
//   code is checked.
// - Idle mode (--idle N): opens N connections, brings each to the point where
//   it could start a transaction, prints "idle_connections_established K"
//   once every attempt has finished, holds them --hold seconds, then QUITs.
//   Used to measure the server's memory per idle connection.  --ramp R sets
//   up at most R connections at a time (the next starts when one is ready or
//   has failed), for servers that fork a process per connection and would
//   otherwise leave thousands waiting in the listen queue past the timeout.
// - Output: one report, text "key value" lines or (--json) one JSON object
//   with the same keys.
// - Bounded: every network wait has a deadline of --timeout seconds (a
//   watchdog per slot closes the socket when it passes), the hold is bounded,
//   so the program always ends.
// - Exit status: 0 when every session succeeded, 1 otherwise, 2 on a usage
//   error.
// - Only loopback servers (127.0.0.0/8, ::1): this is a load tool, not a mailer.
//
// Accounting
// - A transaction's latency runs from sending MAIL to the final 250 after the
//   content; only delivered messages are timed.  "handshake" is session setup:
//   from connect to ready for MAIL (TCP, greeting, EHLO, TLS, EHLO again);
//   "tls_handshake" is the TLS handshake alone.
// - messages_ok + messages_failed = total x messages: messages a broken session
//   never sent count as failed.  A session succeeds when all its messages were
//   accepted and QUIT got 221.
// - failures_by_stage counts the first refusal or error of each transaction
//   or session by the step where it happened; the first kMaxFailureSamples are
//   reported with their reply text.
//
// Performance: one thread, one io_context without locking; commands are
// prebuilt strings; the message (headers, dot-stuffed body, end line) is
// built once and copied once into each slot, which then only patches the 16
// hex digits of the Message-ID before sending it with one async_write.
//
// Known limits: one recipient per message; no AUTH, SIZE or BDAT; TLS
// certificates are not verified (it is a load tool); a reply longer than
// kReadBufferSize is a protocol error; client memory is --sessions x --size
// for the per-slot message copies.
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ssl.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using mxgate::make_error;
using mxgate::Result;

// Replies are short (RFC 5321 4.5.3.1.5: 512 octets a line); a few pipelined
// replies or a long EHLO reply fit many times over.
constexpr std::size_t kReadBufferSize = std::size_t{8} * 1024;
// Failures reported with their text; the rest are only counted by stage.
constexpr std::size_t kMaxFailureSamples = 10;
// Client CPU share (of one core) above which the report warns that the
// figures may measure smtpload rather than the server.
constexpr double kClientBusyWarning = 0.85;
// Body lines: 76 printable characters and CRLF.
constexpr std::size_t kLineChars = 76;
constexpr std::size_t kLineBytes = kLineChars + 2;

constexpr std::string_view kUsage =
    "usage: smtpload --server HOST:PORT [options]\n"
    "  load:  --sessions N (10)  --messages M (1)  --total T (N)  --size BYTES (5120)\n"
    "         --tls none|starttls|implicit (none)  --resume  --pipelining\n"
    "  idle:  --idle N  --hold SECONDS (10)  --ramp R (all at once)\n"
    "  both:  --from ADDR (loadtest@example.org)  --to ADDR (sink@example.test)\n"
    "         --ehlo NAME (smtpload.example.org)  --timeout SECONDS (60)  --json\n"
    "HOST must be a loopback address (127.0.0.0/8, ::1) or localhost; IPv6 as [::1]:PORT.\n"
    "Exit status: 0 all sessions succeeded, 1 some failed, 2 usage error.\n";

// ---------------------------------------------------------------------------
// Options (pure)

enum class TlsMode { none, starttls, implicit };

const char* to_string(TlsMode mode) {
  switch (mode) {
    case TlsMode::none:
      return "none";
    case TlsMode::starttls:
      return "starttls";
    case TlsMode::implicit:
      return "implicit";
  }
  return "?";
}

struct Options {
  asio::ip::tcp::endpoint server;
  unsigned sessions = 10;
  unsigned messages = 1;
  std::uint64_t total = 0;  // 0: same as sessions
  std::size_t size = 5120;
  TlsMode tls = TlsMode::none;
  bool resume = false;
  bool pipelining = false;
  unsigned idle = 0;  // 0: load mode
  unsigned hold_seconds = 10;
  unsigned ramp = 0;  // idle mode: connections being set up at once; 0: all
  std::string from = "loadtest@example.org";
  std::string to = "sink@example.test";
  std::string ehlo = "smtpload.example.org";
  unsigned timeout_seconds = 60;
  bool json = false;
};

template <class T>
Result<T> parse_number(std::string_view flag, std::string_view text, T min, T max) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < min || value > max)
    return make_error(std::string(flag) + ": expected a whole number from " + std::to_string(min) + " to " +
                      std::to_string(max) + ", got \"" + std::string(text) + "\"");
  return value;
}

Result<asio::ip::tcp::endpoint> parse_server(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return make_error("--server: expected [IPV6]:PORT, got \"" + std::string(text) + "\"");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return make_error("--server: expected HOST:PORT, got \"" + std::string(text) + "\"");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto port_number = parse_number<unsigned>("--server port", port, 1, 65535);
  if (!port_number) return make_error(port_number.error());
  if (host == "localhost") host = "127.0.0.1";
  asio::error_code ec;
  auto address = asio::ip::make_address(std::string(host), ec);
  if (ec) return make_error("--server: \"" + std::string(host) + "\" is not a numeric address or localhost");
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  const bool loopback =
      address.is_v4() ? (address.to_v4().to_uint() >> 24) == 127 : address.to_v6() == asio::ip::address_v6::loopback();
  if (!loopback)
    return make_error("--server: refusing " + address.to_string() +
                      ": smtpload only targets loopback (127.0.0.0/8, ::1)");
  return asio::ip::tcp::endpoint(address, static_cast<unsigned short>(*port_number));
}

// Addresses and the EHLO name go into command lines verbatim.
Result<std::string> parse_word(std::string_view flag, std::string_view text) {
  if (text.empty() || text.size() > 254) return make_error(std::string(flag) + ": expected 1 to 254 characters");
  for (const unsigned char c : text)
    if (c <= 0x20 || c >= 0x7F || c == '<' || c == '>')
      return make_error(std::string(flag) + ": no spaces, controls, 8-bit characters or <> allowed");
  return std::string(text);
}

Result<Options> parse_options(const std::vector<std::string_view>& args) {
  Options o;
  bool have_server = false;
  bool have_total = false;
  bool have_hold = false;
  bool have_ramp = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view flag = args[i];
    std::optional<std::string_view> inline_value;
    if (const auto eq = flag.find('='); flag.starts_with("--") && eq != std::string_view::npos) {
      inline_value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    const auto is_switch = [&](std::string_view name) { return flag == name; };
    if (is_switch("--resume") || is_switch("--pipelining") || is_switch("--json")) {
      if (inline_value) return make_error(std::string(flag) + ": takes no value");
      if (flag == "--resume") o.resume = true;
      if (flag == "--pipelining") o.pipelining = true;
      if (flag == "--json") o.json = true;
      continue;
    }
    static constexpr std::string_view kValued[] = {"--server", "--sessions", "--messages", "--total",
                                                   "--size",   "--tls",      "--idle",     "--hold",
                                                   "--ramp",   "--from",     "--to",       "--ehlo",
                                                   "--timeout"};
    if (std::find(std::begin(kValued), std::end(kValued), flag) == std::end(kValued))
      return make_error("unknown option \"" + std::string(flag) + "\"");
    std::string_view value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i + 1 >= args.size()) return make_error(std::string(flag) + ": missing value");
      value = args[++i];
    }
    if (flag == "--server") {
      auto server = parse_server(value);
      if (!server) return make_error(server.error());
      o.server = *server;
      have_server = true;
    } else if (flag == "--sessions") {
      auto n = parse_number<unsigned>(flag, value, 1, 100000);
      if (!n) return make_error(n.error());
      o.sessions = *n;
    } else if (flag == "--messages") {
      auto n = parse_number<unsigned>(flag, value, 0, 1000000);
      if (!n) return make_error(n.error());
      o.messages = *n;
    } else if (flag == "--total") {
      auto n = parse_number<std::uint64_t>(flag, value, 1, 1000000000);
      if (!n) return make_error(n.error());
      o.total = *n;
      have_total = true;
    } else if (flag == "--size") {
      auto n = parse_number<std::size_t>(flag, value, 0, std::size_t{1} << 30);
      if (!n) return make_error(n.error());
      o.size = *n;
    } else if (flag == "--tls") {
      if (value == "none") {
        o.tls = TlsMode::none;
      } else if (value == "starttls") {
        o.tls = TlsMode::starttls;
      } else if (value == "implicit") {
        o.tls = TlsMode::implicit;
      } else {
        return make_error("--tls: expected none, starttls or implicit, got \"" + std::string(value) + "\"");
      }
    } else if (flag == "--idle") {
      auto n = parse_number<unsigned>(flag, value, 1, 1000000);
      if (!n) return make_error(n.error());
      o.idle = *n;
    } else if (flag == "--hold") {
      auto n = parse_number<unsigned>(flag, value, 0, 86400);
      if (!n) return make_error(n.error());
      o.hold_seconds = *n;
      have_hold = true;
    } else if (flag == "--ramp") {
      auto n = parse_number<unsigned>(flag, value, 1, 1000000);
      if (!n) return make_error(n.error());
      o.ramp = *n;
      have_ramp = true;
    } else if (flag == "--from" || flag == "--to" || flag == "--ehlo") {
      auto word = parse_word(flag, value);
      if (!word) return make_error(word.error());
      (flag == "--from" ? o.from : flag == "--to" ? o.to : o.ehlo) = std::move(*word);
    } else if (flag == "--timeout") {
      auto n = parse_number<unsigned>(flag, value, 1, 86400);
      if (!n) return make_error(n.error());
      o.timeout_seconds = *n;
    }
  }
  if (!have_server) return make_error("--server is required");
  if (have_hold && o.idle == 0) return make_error("--hold: only with --idle");
  if (have_ramp && o.idle == 0) return make_error("--ramp: only with --idle");
  if (have_total && o.idle != 0) return make_error("--total: not with --idle");
  if (!have_total) o.total = o.sessions;
  return o;
}

// ---------------------------------------------------------------------------
// The message (pure)

// What follows 354 for every message: headers, the body dot-stuffed, and
// ".\r\n".  Only the 16 hex digits at id_offset differ between messages.
struct MessageTemplate {
  std::string wire;
  std::size_t id_offset = 0;
  std::size_t content_size = 0;  // headers and body as the server stores them
};

MessageTemplate build_message(const Options& o, std::string_view run_id) {
  char date[64];
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);

  MessageTemplate m;
  const auto make_header = [&](const std::string& subject) {
    std::string h = "Message-ID: <";
    m.id_offset = h.size();
    h.append(16, '0').append(".").append(run_id).append("@smtpload.invalid>\r\n");
    h.append("Date: ").append(date).append("\r\n");
    h.append("From: <").append(o.from).append(">\r\n");
    h.append("To: <").append(o.to).append(">\r\n");
    h.append("Subject: ").append(subject).append("\r\n");
    h.append("\r\n");
    return h;
  };
  std::string subject = "smtpload test message";
  std::string header = make_header(subject);
  std::size_t body = o.size > header.size() ? o.size - header.size() : 0;
  if (body % kLineBytes == 1) {  // a last line needs at least its CRLF: move one byte to the header
    subject += '.';
    header = make_header(subject);
    --body;
  }
  m.content_size = header.size() + body;

  m.wire.reserve(m.content_size + m.content_size / 64 + 3);
  m.wire = header;
  for (std::size_t line = 0; body > 0; ++line) {
    const std::size_t chars = body >= kLineBytes ? kLineChars : body - 2;
    const std::size_t start = m.wire.size();
    for (std::size_t j = 0; j < chars; ++j) m.wire.push_back(static_cast<char>('!' + (line + j) % 94));
    if (chars > 0 && line % 16 == 5) m.wire[start] = '.';  // exercise dot-stuffing
    if (chars > 0 && m.wire[start] == '.') m.wire.insert(start, 1, '.');
    m.wire.append("\r\n");
    body -= chars + 2;
  }
  m.wire.append(".\r\n");
  return m;
}

void patch_message_id(std::string& wire, std::size_t offset, std::uint64_t id) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i, id >>= 4) wire[offset + static_cast<std::size_t>(i)] = kHex[id & 15];
}

// ---------------------------------------------------------------------------
// SMTP replies (pure)

// One reply (RFC 5321 4.2): "ddd-text" lines, then "ddd text" or "ddd".
struct Reply {
  int code = 0;
  std::string_view text;  // the whole reply as received, line ends included
};

enum class ParseStatus { complete, need_more, malformed };

// Looks for one complete reply at the start of data.  Bare LF line ends are
// tolerated; every line must carry the same code.  The caller bounds how much
// it buffers while need_more.
ParseStatus parse_reply(std::string_view data, Reply& reply, std::size_t& consumed) {
  std::size_t pos = 0;
  int code = 0;
  for (;;) {
    const auto lf = data.find('\n', pos);
    if (lf == std::string_view::npos) return ParseStatus::need_more;
    std::string_view line = data.substr(pos, lf - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() < 3 || (line.size() > 3 && line[3] != ' ' && line[3] != '-')) return ParseStatus::malformed;
    int line_code = 0;
    for (int i = 0; i < 3; ++i) {
      if (line[i] < '0' || line[i] > '9') return ParseStatus::malformed;
      line_code = line_code * 10 + (line[i] - '0');
    }
    if (code != 0 && line_code != code) return ParseStatus::malformed;
    code = line_code;
    pos = lf + 1;
    if (line.size() == 3 || line[3] == ' ') {
      reply.code = code;
      reply.text = data.substr(0, pos);
      consumed = pos;
      return ParseStatus::complete;
    }
  }
}

// Calls f(line) for each line of a reply, without its line end.
template <class F>
void for_each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    const auto lf = text.find('\n');
    std::string_view line = text.substr(0, lf);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    f(line);
    if (lf == std::string_view::npos) break;
    text.remove_prefix(lf + 1);
  }
}

// True when an EHLO reply lists keyword (lines after the first).
bool has_keyword(const Reply& reply, std::string_view keyword) {
  bool found = false;
  bool first = true;
  for_each_line(reply.text, [&](std::string_view line) {
    if (first || line.size() < 4) {
      first = false;
      return;
    }
    std::string_view word = line.substr(4);
    word = word.substr(0, word.find(' '));
    if (word.size() == keyword.size() && strncasecmp(word.data(), keyword.data(), word.size()) == 0) found = true;
  });
  return found;
}

// The reply on one line, for failure reports.
std::string summary(const Reply& reply) {
  std::string s;
  for_each_line(reply.text, [&](std::string_view line) {
    if (!s.empty()) s += " | ";
    s += line;
  });
  if (s.size() > 300) s.resize(300);
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) c = '?';
  return s;
}

enum class Verdict { ok, rejected, broken };

// Whether a reply is the wanted one; if not, whether the session is still in
// step (a 4xx/5xx refusal) or not (421, or a success code out of place).
Verdict judge(const Reply& reply, int wanted, int also = 0) {
  if (reply.code == wanted || (also != 0 && reply.code == also)) return Verdict::ok;
  if (reply.code == 421 || reply.code < 400 || reply.code >= 600) return Verdict::broken;
  return Verdict::rejected;
}

// ---------------------------------------------------------------------------
// Statistics and the report (pure)

struct Stats {
  std::uint64_t sessions_ok = 0;
  std::uint64_t sessions_failed = 0;
  std::uint64_t messages_ok = 0;
  std::uint64_t messages_failed = 0;
  std::uint64_t tls_sessions = 0;
  std::uint64_t tls_resumed = 0;
  std::vector<std::uint32_t> transaction_us;
  std::vector<std::uint32_t> handshake_us;
  std::vector<std::uint32_t> tls_handshake_us;
  std::map<std::string, std::uint64_t> tls_versions;
  std::map<std::string, std::uint64_t> tls_ciphers;
  std::map<std::string, std::uint64_t> tls_server_keys;
  std::map<std::string, std::uint64_t> failures_by_stage;
  std::vector<std::string> failures;

  void note_failure(std::string_view stage, std::string_view detail) {
    ++failures_by_stage[std::string(stage)];
    if (failures.size() < kMaxFailureSamples) failures.push_back(std::string(stage) + ": " + std::string(detail));
  }
};

std::uint32_t micros_since(Clock::time_point start) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
  return static_cast<std::uint32_t>(std::min<long long>(us, UINT32_MAX));
}

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, max = 0;  // milliseconds
};

// Nearest-rank percentiles; sorts the samples.
Percentiles percentiles(std::vector<std::uint32_t>& us) {
  Percentiles p;
  if (us.empty()) return p;
  std::sort(us.begin(), us.end());
  const auto rank = [&](double q) {
    const auto r = static_cast<std::size_t>(std::ceil(q * static_cast<double>(us.size())));
    return us[std::clamp<std::size_t>(r, 1, us.size()) - 1] / 1000.0;
  };
  p.p50 = rank(0.50);
  p.p90 = rank(0.90);
  p.p99 = rank(0.99);
  p.max = us.back() / 1000.0;
  return p;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Ordered keys, rendered as text ("key value" lines) or as one JSON object.
class Report {
 public:
  void integer(std::string key, std::uint64_t v) { add(std::move(key), std::to_string(v), std::to_string(v)); }
  void number(std::string key, double v, int decimals = 3) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    add(std::move(key), buf, buf);
  }
  void text(std::string key, std::string v) {
    std::string json = json_string(v);
    add(std::move(key), std::move(v), std::move(json));
  }
  // Text: "key a=1,b=2" (or "key -"); JSON: {"a":1,"b":2}.
  void counts(std::string key, const std::map<std::string, std::uint64_t>& m) {
    std::string text;
    std::string json = "{";
    for (const auto& [name, n] : m) {
      if (!text.empty()) {
        text += ',';
        json += ',';
      }
      text += name + "=" + std::to_string(n);
      json += json_string(name) + ":" + std::to_string(n);
    }
    add(std::move(key), text.empty() ? "-" : text, json + "}");
  }
  // Text: one "key item" line per item; JSON: an array.
  void list(std::string key, const std::vector<std::string>& items) {
    std::string json = "[";
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i > 0) json += ',';
      json += json_string(items[i]);
    }
    json += ']';
    fields_.push_back({std::move(key), items, std::move(json)});
  }
  void percentiles(const std::string& prefix, std::vector<std::uint32_t>& samples) {
    const auto p = ::percentiles(samples);
    number(prefix + "_p50", p.p50);
    number(prefix + "_p90", p.p90);
    number(prefix + "_p99", p.p99);
    number(prefix + "_max", p.max);
  }

  std::string as_text() const {
    std::string out;
    for (const auto& f : fields_)
      for (const auto& line : f.text) out += f.key + " " + line + "\n";
    return out;
  }
  std::string as_json() const {
    std::string out = "{";
    for (std::size_t i = 0; i < fields_.size(); ++i) {
      if (i > 0) out += ',';
      out += json_string(fields_[i].key);
      out += ':';
      out += fields_[i].json;
    }
    out += "}\n";
    return out;
  }

 private:
  struct Field {
    std::string key;
    std::vector<std::string> text;
    std::string json;
  };
  void add(std::string key, std::string text, std::string json) {
    fields_.push_back({std::move(key), {std::move(text)}, std::move(json)});
  }
  std::vector<Field> fields_;
};

// ---------------------------------------------------------------------------
// The Asio shell

void rethrow(const std::exception_ptr& e) {
  if (e) std::rethrow_exception(e);
}

struct SessionFree {
  void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
};
using SessionPtr = std::unique_ptr<SSL_SESSION, SessionFree>;

// Command lines, built once.
struct Commands {
  std::string ehlo;
  std::string mail;
  std::string rcpt;
  std::string pipelined;  // MAIL, RCPT and DATA as one group (RFC 2920)
  static constexpr std::string_view data = "DATA\r\n";
  static constexpr std::string_view rset = "RSET\r\n";
  static constexpr std::string_view quit = "QUIT\r\n";
  static constexpr std::string_view starttls = "STARTTLS\r\n";
};

// Everything the slots share.  One thread: no locks.
struct Run {
  Run(asio::io_context& io, const Options& options, asio::ssl::context* tls, const MessageTemplate& message)
      : io(io), options(options), tls(tls), message(message), release(io), hold(io) {
    commands.ehlo = "EHLO " + options.ehlo + "\r\n";
    commands.mail = "MAIL FROM:<" + options.from + ">\r\n";
    commands.rcpt = "RCPT TO:<" + options.to + ">\r\n";
    commands.pipelined = commands.mail + commands.rcpt + std::string(Commands::data);
    release.expires_at(Clock::time_point::max());
  }

  void begin_hold();

  // Idle mode with --ramp: starts the next slot, if any is left.
  std::function<void()> start_next;

  asio::io_context& io;
  const Options& options;
  asio::ssl::context* tls;  // null with --tls none
  const MessageTemplate& message;
  Commands commands;
  Stats stats;
  std::uint64_t next_message_id = 0;
  std::uint64_t sessions_started = 0;
  // Idle mode: slots wait on `release` until `released`.
  unsigned idle_attempted = 0;
  unsigned idle_established = 0;
  bool released = false;
  asio::steady_timer release;
  asio::steady_timer hold;
};

void Run::begin_hold() {
  // Text mode: stdout, for a script that waits for the line; --json keeps
  // stdout for the one object.
  std::FILE* out = options.json ? stderr : stdout;
  std::fprintf(out, "idle_connections_established %u\n", idle_established);
  std::fflush(out);
  asio::co_spawn(
      io,
      [this]() -> asio::awaitable<void> {
        hold.expires_after(std::chrono::seconds(options.hold_seconds));
        asio::error_code ec;
        co_await hold.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        released = true;
        release.cancel();
      },
      rethrow);
}

// One concurrent session position: runs its sessions one after another,
// reusing its socket object, buffers and (with --resume) TLS session.
class Slot {
 public:
  explicit Slot(Run& run)
      : run_(run),
        timeout_(std::chrono::seconds(run.options.timeout_seconds)),
        socket_(run.io),
        timer_(run.io),
        read_buffer_(new char[kReadBufferSize]) {
    timer_.expires_at(Clock::time_point::max());
  }

  asio::awaitable<void> run_load() {
    asio::co_spawn(run_.io, watchdog(), rethrow);
    while (run_.sessions_started < run_.options.total) {
      ++run_.sessions_started;
      co_await load_session();
    }
    stop_watchdog();
  }

  asio::awaitable<void> run_idle() {
    asio::co_spawn(run_.io, watchdog(), rethrow);
    bool healthy = co_await open_session();
    ++run_.idle_attempted;
    if (healthy) ++run_.idle_established;
    if (run_.start_next) run_.start_next();
    if (run_.idle_attempted == run_.options.idle) run_.begin_hold();
    if (healthy) {
      deadline_ = Clock::time_point::max();  // nothing to time while holding
      asio::error_code ec;
      while (!run_.released) co_await run_.release.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      healthy = co_await quit();
    }
    close(healthy);
    ++(healthy ? run_.stats.sessions_ok : run_.stats.sessions_failed);
    stop_watchdog();
  }

  // The SSL ex_data slot that points back to the Slot (asio's engine owns
  // SSL_get_app_data for its verify callback and deletes what it finds there).
  static int slot_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
  }

  // SSL_CTX new-session callback (--resume): keeps the newest session of the
  // connection's slot; with TLS 1.3 that is the ticket, which arrives after
  // the handshake.
  static int on_new_session(SSL* ssl, SSL_SESSION* session) {
    auto* slot = static_cast<Slot*>(SSL_get_ex_data(ssl, slot_index()));
    if (slot == nullptr) return 0;
    slot->saved_session_.reset(session);
    return 1;  // we own the reference now
  }

 private:
  enum class Outcome { delivered, rejected, broken };

  asio::awaitable<void> load_session() {
    const unsigned messages = run_.options.messages;
    bool healthy = co_await open_session();
    unsigned delivered = 0;
    for (unsigned m = 0; healthy && m < messages; ++m) {
      switch (co_await transaction()) {
        case Outcome::delivered:
          ++delivered;
          break;
        case Outcome::rejected:
          break;
        case Outcome::broken:
          healthy = false;
          break;
      }
    }
    if (healthy) healthy = co_await quit();
    close(healthy);
    run_.stats.messages_ok += delivered;
    run_.stats.messages_failed += messages - delivered;
    ++(healthy && delivered == messages ? run_.stats.sessions_ok : run_.stats.sessions_failed);
  }

  // Connect to ready for MAIL.
  asio::awaitable<bool> open_session() {
    read_begin_ = read_end_ = 0;
    expired_ = false;
    pipelining_ = false;
    const auto start = Clock::now();
    const auto& endpoint = run_.options.server;
    asio::error_code ec;
    socket_.open(endpoint.protocol(), ec);
    if (ec) co_return fail("connect", ec.message());
    socket_.set_option(asio::ip::tcp::no_delay(true), ec);
    arm();
    co_await socket_.async_connect(endpoint, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return fail("connect", io_error(ec));
    if (run_.options.tls == TlsMode::implicit && !co_await start_tls()) co_return false;

    Reply reply;
    if (!co_await read_reply(reply, "greeting")) co_return false;
    if (judge(reply, 220) != Verdict::ok) co_return fail("greeting", summary(reply));
    if (!co_await ehlo()) co_return false;
    if (run_.options.tls == TlsMode::starttls) {
      if (!starttls_offered_) co_return fail("ehlo", "STARTTLS not advertised");
      if (!co_await write(Commands::starttls, "starttls") || !co_await read_reply(reply, "starttls")) co_return false;
      if (judge(reply, 220) != Verdict::ok) co_return fail("starttls", summary(reply));
      if (read_end_ != read_begin_) co_return fail("starttls", "server sent more after its 220 (injection)");
      if (!co_await start_tls() || !co_await ehlo()) co_return false;
    }
    run_.stats.handshake_us.push_back(micros_since(start));
    co_return true;
  }

  asio::awaitable<bool> ehlo() {
    Reply reply;
    if (!co_await write(run_.commands.ehlo, "ehlo") || !co_await read_reply(reply, "ehlo")) co_return false;
    if (judge(reply, 250) != Verdict::ok) co_return fail("ehlo", summary(reply));
    pipelining_ = has_keyword(reply, "PIPELINING");
    starttls_offered_ = has_keyword(reply, "STARTTLS");
    co_return true;
  }

  asio::awaitable<bool> start_tls() {
    tls_.emplace(std::move(socket_), *run_.tls);
    SSL* ssl = tls_->native_handle();
    SSL_set_ex_data(ssl, slot_index(), this);
    if (run_.options.resume && saved_session_) SSL_set_session(ssl, saved_session_.get());
    const auto start = Clock::now();
    arm();
    asio::error_code ec;
    co_await tls_->async_handshake(asio::ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      std::string detail = io_error(ec);
      char buf[256];
      while (const unsigned long code = ERR_get_error()) {
        ERR_error_string_n(code, buf, sizeof buf);
        detail += std::string(" (") + buf + ")";
      }
      co_return fail("tls_handshake", detail);
    }
    auto& stats = run_.stats;
    stats.tls_handshake_us.push_back(micros_since(start));
    ++stats.tls_sessions;
    if (SSL_session_reused(ssl)) ++stats.tls_resumed;
    ++stats.tls_versions[SSL_get_version(ssl)];
    if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl)) ++stats.tls_ciphers[SSL_CIPHER_get_name(cipher)];
    if (X509* cert = SSL_get0_peer_certificate(ssl)) {
      if (EVP_PKEY* key = X509_get0_pubkey(cert)) {
        const char* type = EVP_PKEY_get0_type_name(key);
        ++stats.tls_server_keys[std::string(type ? type : "?") + "-" + std::to_string(EVP_PKEY_get_bits(key))];
      }
    }
    co_return true;
  }

  asio::awaitable<Outcome> transaction() {
    if (message_.empty()) message_ = run_.message.wire;
    patch_message_id(message_, run_.message.id_offset, run_.next_message_id++);
    const auto start = Clock::now();
    Reply reply;

    if (pipelining_ && run_.options.pipelining) {
      if (!co_await write(run_.commands.pipelined, "mail")) co_return Outcome::broken;
      // The first refusal of the group is the one reported.
      std::optional<Verdict> refused;
      static constexpr const char* kStages[] = {"mail", "rcpt", "data"};
      static constexpr int kWanted[] = {250, 250, 354};
      Verdict data = Verdict::ok;
      for (int i = 0; i < 3; ++i) {
        if (!co_await read_reply(reply, kStages[i])) co_return Outcome::broken;
        const Verdict v = judge(reply, kWanted[i], i == 1 ? 251 : 0);
        if (v == Verdict::broken) {
          run_.stats.note_failure(kStages[i], summary(reply));
          co_return Outcome::broken;
        }
        if (v != Verdict::ok && !refused) {
          run_.stats.note_failure(kStages[i], summary(reply));
          refused = v;
        }
        if (i == 2) data = v;
      }
      if (refused && data == Verdict::ok) {
        run_.stats.note_failure("data", "354 although MAIL or RCPT was refused");
        co_return Outcome::broken;
      }
      if (refused) co_return co_await reset() ? Outcome::rejected : Outcome::broken;
    } else {
      const std::string_view lines[] = {run_.commands.mail, run_.commands.rcpt, Commands::data};
      static constexpr const char* kStages[] = {"mail", "rcpt", "data"};
      static constexpr int kWanted[] = {250, 250, 354};
      for (int i = 0; i < 3; ++i) {
        if (!co_await write(lines[i], kStages[i]) || !co_await read_reply(reply, kStages[i])) co_return Outcome::broken;
        const Verdict v = judge(reply, kWanted[i], i == 1 ? 251 : 0);
        if (v == Verdict::ok) continue;
        run_.stats.note_failure(kStages[i], summary(reply));
        if (v == Verdict::broken) co_return Outcome::broken;
        co_return co_await reset() ? Outcome::rejected : Outcome::broken;
      }
    }

    if (!co_await write(message_, "content") || !co_await read_reply(reply, "end_of_data")) co_return Outcome::broken;
    const Verdict v = judge(reply, 250);
    if (v == Verdict::ok) {
      run_.stats.transaction_us.push_back(micros_since(start));
      co_return Outcome::delivered;
    }
    run_.stats.note_failure("end_of_data", summary(reply));
    co_return v == Verdict::broken ? Outcome::broken : Outcome::rejected;
  }

  asio::awaitable<bool> reset() {
    Reply reply;
    if (!co_await write(Commands::rset, "rset") || !co_await read_reply(reply, "rset")) co_return false;
    if (judge(reply, 250) != Verdict::ok) co_return fail("rset", summary(reply));
    co_return true;
  }

  asio::awaitable<bool> quit() {
    Reply reply;
    if (!co_await write(Commands::quit, "quit") || !co_await read_reply(reply, "quit")) co_return false;
    if (judge(reply, 221) != Verdict::ok) co_return fail("quit", summary(reply));
    co_return true;
  }

  // Closes the connection and readies the socket object for the next one.
  // After a clean QUIT the TLS session is marked shut down so that freeing the
  // SSL object does not mark the saved session unresumable; no close_notify
  // is sent (the server has closed already).
  void close(bool clean) {
    asio::error_code ec;
    if (tls_) {
      if (clean) SSL_set_shutdown(tls_->native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
      tls_->next_layer().close(ec);
      tls_.reset();  // socket_ (moved from) is closed and can be opened again
    } else {
      socket_.close(ec);
    }
  }

  // Reads until one complete reply is buffered.  reply.text stays valid until
  // the next read_reply.
  asio::awaitable<bool> read_reply(Reply& reply, const char* stage) {
    char* const buffer = read_buffer_.get();
    for (;;) {
      std::size_t consumed = 0;
      const std::string_view pending(buffer + read_begin_, read_end_ - read_begin_);
      switch (parse_reply(pending, reply, consumed)) {
        case ParseStatus::complete:
          read_begin_ += consumed;
          if (read_begin_ == read_end_) read_begin_ = read_end_ = 0;
          co_return true;
        case ParseStatus::malformed: {
          Reply raw{0, pending.substr(0, std::min<std::size_t>(pending.size(), 200))};
          co_return fail(stage, "malformed reply: " + summary(raw));
        }
        case ParseStatus::need_more:
          break;
      }
      if (read_begin_ > 0) {
        std::memmove(buffer, buffer + read_begin_, read_end_ - read_begin_);
        read_end_ -= read_begin_;
        read_begin_ = 0;
      }
      if (read_end_ == kReadBufferSize) co_return fail(stage, "reply longer than the read buffer");
      const auto space = asio::buffer(buffer + read_end_, kReadBufferSize - read_end_);
      arm();
      asio::error_code ec;
      std::size_t n = 0;
      if (tls_) {
        n = co_await tls_->async_read_some(space, asio::redirect_error(asio::use_awaitable, ec));
      } else {
        n = co_await socket_.async_read_some(space, asio::redirect_error(asio::use_awaitable, ec));
      }
      if (ec) co_return fail(stage, io_error(ec));
      read_end_ += n;
    }
  }

  asio::awaitable<bool> write(std::string_view bytes, const char* stage) {
    arm();
    asio::error_code ec;
    if (tls_) {
      co_await asio::async_write(*tls_, asio::buffer(bytes), asio::redirect_error(asio::use_awaitable, ec));
    } else {
      co_await asio::async_write(socket_, asio::buffer(bytes), asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) co_return fail(stage, io_error(ec));
    co_return true;
  }

  bool fail(const char* stage, const std::string& detail) {
    run_.stats.note_failure(stage, detail);
    return false;
  }

  std::string io_error(const asio::error_code& ec) const {
    if (expired_) return "timeout (" + std::to_string(run_.options.timeout_seconds) + " s)";
    if (ec == asio::error::eof) return "connection closed by server";
    if (ec == asio::ssl::error::stream_truncated) return "connection closed by server (no TLS close_notify)";
    return ec.message();
  }

  // Deadlines.  arm() only moves deadline_; the watchdog sleeps until the
  // deadline it last saw and re-reads it, so a busy connection costs no timer
  // operation per I/O.  Only a deadline earlier than the sleeping one (after
  // the idle hold) wakes it.
  void arm() {
    deadline_ = Clock::now() + timeout_;
    if (deadline_ < timer_.expiry()) timer_.cancel();
  }

  asio::awaitable<void> watchdog() {
    asio::error_code ec;
    while (!finished_) {
      timer_.expires_at(deadline_);
      co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (finished_) break;
      if (Clock::now() >= deadline_) {
        expired_ = true;  // the pending operation fails; io_error() says why
        deadline_ = Clock::time_point::max();
        if (tls_) {
          tls_->next_layer().close(ec);
        } else {
          socket_.close(ec);
        }
      }
    }
  }

  void stop_watchdog() {
    finished_ = true;
    timer_.cancel();
  }

  Run& run_;
  const Clock::duration timeout_;
  asio::ip::tcp::socket socket_;  // moved into tls_ for the TLS part of a connection
  std::optional<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
  SessionPtr saved_session_;
  asio::steady_timer timer_;
  Clock::time_point deadline_ = Clock::time_point::max();
  bool expired_ = false;
  bool finished_ = false;
  bool pipelining_ = false;
  bool starttls_offered_ = false;
  std::unique_ptr<char[]> read_buffer_;
  std::size_t read_begin_ = 0;
  std::size_t read_end_ = 0;
  std::string message_;  // this slot's copy of the message; the Message-ID is patched per message
};

Result<std::unique_ptr<asio::ssl::context>> make_client_context(bool resume) {
  auto context = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX* ctx = context->native_handle();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) return make_error("cannot require TLS 1.2");
  // A load tool: no certificate checks.  SSL_VERIFY_NONE alone still builds
  // and verifies the chain (and ignores the result); the callback skips that
  // work.  The handshake signature is still verified.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_cert_verify_callback(
      ctx, [](X509_STORE_CTX*, void*) { return 1; }, nullptr);
  if (resume) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, &Slot::on_new_session);
  }
  return context;
}

// Room for every connection plus a few; the soft limit is raised up to the
// hard one.  Returns false when even that is too small.
bool raise_fd_limit(std::uint64_t connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return true;
  const rlim_t wanted = static_cast<rlim_t>(connections) + 64;
  if (limit.rlim_cur >= wanted) return true;
  limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, limit.rlim_max);
  setrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur >= wanted;
}

double seconds(const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; }

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kUsage.data(), stdout);
    return 0;
  }
  auto parsed = parse_options(args);
  if (!parsed) {
    std::fprintf(stderr, "smtpload: %s\n%s", parsed.error().c_str(), kUsage.data());
    return 2;
  }
  const Options& options = *parsed;
  const bool idle = options.idle != 0;
  const std::uint64_t slots = idle ? options.idle : std::min<std::uint64_t>(options.sessions, options.total);
  if (!raise_fd_limit(slots))
    std::fprintf(stderr, "smtpload: warning: open-file limit below %llu connections; raise ulimit -n\n",
                 static_cast<unsigned long long>(slots));

  std::unique_ptr<asio::ssl::context> tls;
  if (options.tls != TlsMode::none) {
    auto context = make_client_context(options.resume);
    if (!context) {
      std::fprintf(stderr, "smtpload: tls: %s\n", context.error().c_str());
      return 1;
    }
    tls = std::move(*context);
  }

  char run_id[64];
  std::snprintf(run_id, sizeof run_id, "%lx.%x", static_cast<unsigned long>(std::time(nullptr)),
                static_cast<unsigned>(::getpid()));
  const MessageTemplate message = build_message(options, run_id);

  asio::io_context io(1);
  Run run(io, options, tls.get(), message);
  if (!idle) {
    const std::uint64_t planned = std::min<std::uint64_t>(options.total * options.messages, 50'000'000);
    run.stats.transaction_us.reserve(planned);
    run.stats.handshake_us.reserve(std::min<std::uint64_t>(options.total, 50'000'000));
  }

  std::vector<std::unique_ptr<Slot>> pool;
  pool.reserve(slots);
  for (std::uint64_t i = 0; i < slots; ++i) pool.push_back(std::make_unique<Slot>(run));
  std::uint64_t spawned = 0;
  const auto spawn_next = [&] {
    Slot& slot = *pool[spawned++];
    asio::co_spawn(io, idle ? slot.run_idle() : slot.run_load(), rethrow);
  };
  // --ramp: the first R idle slots now, then one more each time one is set up.
  const std::uint64_t first = idle && options.ramp != 0 ? std::min<std::uint64_t>(options.ramp, slots) : slots;
  if (first < slots)
    run.start_next = [&] {
      if (spawned < slots) spawn_next();
    };
  const auto started = Clock::now();
  while (spawned < first) spawn_next();
  io.run();
  const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  pool.clear();

  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double cpu_user = seconds(usage.ru_utime);
  const double cpu_sys = seconds(usage.ru_stime);

  Stats& s = run.stats;
  Report r;
  r.text("mode", idle ? "idle" : "load");
  r.text("server", options.server.address().to_string() + ":" + std::to_string(options.server.port()));
  r.text("tls", to_string(options.tls));
  r.integer("pipelining", options.pipelining ? 1 : 0);
  r.integer("resume", options.resume ? 1 : 0);
  if (idle) {
    r.integer("idle_connections_established", run.idle_established);
    r.integer("hold_s", options.hold_seconds);
  } else {
    r.integer("concurrency", slots);
    r.integer("messages_per_session", options.messages);
    r.integer("message_size", message.content_size);
  }
  r.integer("sessions_ok", s.sessions_ok);
  r.integer("sessions_failed", s.sessions_failed);
  r.integer("messages_ok", s.messages_ok);
  r.integer("messages_failed", s.messages_failed);
  r.number("elapsed_s", elapsed);
  r.number("messages_per_s", elapsed > 0 ? s.messages_ok / elapsed : 0, 1);
  r.number("sessions_per_s", elapsed > 0 ? s.sessions_ok / elapsed : 0, 1);
  r.percentiles("latency_ms", s.transaction_us);
  r.percentiles("handshake_ms", s.handshake_us);
  r.percentiles("tls_handshake_ms", s.tls_handshake_us);
  r.integer("tls_sessions", s.tls_sessions);
  r.integer("resumed", s.tls_resumed);
  r.counts("tls_versions", s.tls_versions);
  r.counts("tls_ciphers", s.tls_ciphers);
  r.counts("tls_server_keys", s.tls_server_keys);
  r.number("cpu_user_s", cpu_user);
  r.number("cpu_sys_s", cpu_sys);
  r.number("cpu_percent", elapsed > 0 ? 100.0 * (cpu_user + cpu_sys) / elapsed : 0, 1);
  r.counts("failures_by_stage", s.failures_by_stage);
  r.list("failure", s.failures);
  const std::string out = options.json ? r.as_json() : r.as_text();
  std::fwrite(out.data(), 1, out.size(), stdout);
  // One core is all this tool has: near it, the figures measure the client.
  if (!idle && elapsed > 1 && (cpu_user + cpu_sys) / elapsed > kClientBusyWarning)
    std::fprintf(stderr, "smtpload: warning: the client used %.0f%% of its core; the figures may be client-bound\n",
                 100.0 * (cpu_user + cpu_sys) / elapsed);

  const std::uint64_t expected = idle ? options.idle : options.total;
  return s.sessions_failed == 0 && s.sessions_ok == expected ? 0 : 1;
}
