#include "smtp/session.hpp"

#include <strings.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <limits>

#include "smtp/address.hpp"

namespace mxgate::smtp {
namespace {

// At most this much is reserved up front for a message from its MAIL SIZE=
// declaration; beyond it the buffer grows as the data arrives.
constexpr std::uint64_t kMaxReserveForDeclaredSize = 8 * 1024 * 1024;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && strncasecmp(s.data(), prefix.data(), prefix.size()) == 0;
}

// A TLS record header (handshake, SSL 3.0 .. TLS 1.3 record versions): a
// client that speaks TLS to a cleartext port.  It would otherwise sit in the
// line buffer until the timeout.
bool looks_like_tls_record(std::string_view s) {
  return s.size() >= 3 && s[0] == 0x16 && s[1] == 0x03 && static_cast<unsigned char>(s[2]) <= 0x04;
}

// RFC 5321 commands carry printable US-ASCII (and UTF-8 with RFC 6531);
// NUL and other controls are never legitimate.  HT is tolerated as a space.
bool has_invalid_characters(std::string_view line) {
  bool non_ascii = false;
  for (const char ch : line) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7F) return true;
    if (c >= 0x80) non_ascii = true;
  }
  return non_ascii && !is_valid_utf8(line);
}

struct MailParameters {
  bool smtputf8 = false;
  bool body_8bitmime = false;
  std::optional<std::uint64_t> size;
};

// esmtp-param = esmtp-keyword ["=" esmtp-value] (RFC 5321 section 4.1.2).
bool valid_parameter(std::string_view keyword, std::string_view value, bool has_value) {
  if (keyword.empty()) return false;
  for (std::size_t i = 0; i < keyword.size(); ++i) {
    const auto c = static_cast<unsigned char>(keyword[i]);
    if (!std::isalnum(c) && !(c == '-' && i > 0)) return false;
  }
  if (has_value && value.empty()) return false;
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 33 || c == '=' || c == 127) return false;
  }
  return true;
}

template <class Visit>
bool for_each_parameter(std::string_view rest, Visit visit) {
  while (!rest.empty()) {
    const auto space = rest.find(' ');
    const auto param = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view{} : rest.substr(space + 1);
    if (param.empty()) continue;
    const auto eq = param.find('=');
    const auto keyword = param.substr(0, eq);
    const auto value = eq == std::string_view::npos ? std::string_view{} : param.substr(eq + 1);
    if (!valid_parameter(keyword, value, eq != std::string_view::npos)) return false;
    if (!visit(keyword, value, eq != std::string_view::npos)) return false;
  }
  return true;
}

// RFC 1870 section 4: any number of digits is valid; one too large to
// represent is simply over every limit.
std::optional<std::uint64_t> parse_size_value(std::string_view s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  std::uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) return std::numeric_limits<std::uint64_t>::max();
  return v;
}

std::optional<std::uint64_t> parse_decimal(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string enhanced_reply(int code, std::string_view enhanced, std::string_view text) {
  std::string out;
  append_reply(out, Reply{code, enhanced, std::string(text)});
  return out;
}

}  // namespace

// The command table: legality that does not depend on arguments lives here,
// not in scattered ifs (after OpenSMTPD's smtp_session.c).
struct Session::CommandSpec {
  std::string_view verb;
  void (Session::*handler)(std::string_view args);
};

const Session::CommandSpec* Session::find_command(std::string_view verb) {
  static constexpr std::array<CommandSpec, 14> kCommands{{
      {"EHLO", &Session::cmd_ehlo},
      {"HELO", &Session::cmd_helo},
      {"MAIL", &Session::cmd_mail},
      {"RCPT", &Session::cmd_rcpt},
      {"DATA", &Session::cmd_data},
      {"BDAT", &Session::cmd_bdat},
      {"RSET", &Session::cmd_rset},
      {"NOOP", &Session::cmd_noop},
      {"QUIT", &Session::cmd_quit},
      {"VRFY", &Session::cmd_vrfy},
      {"EXPN", &Session::cmd_expn},
      {"HELP", &Session::cmd_help},
      {"STARTTLS", &Session::cmd_starttls},
      {"AUTH", &Session::cmd_auth},
  }};
  for (const auto& spec : kCommands)
    if (iequals(spec.verb, verb)) return &spec;
  return nullptr;
}

Session::Session(SessionSettings settings, SessionEnvironment& environment, std::string client_ip)
    : settings_(std::move(settings)),
      environment_(environment),
      client_ip_(std::move(client_ip)),
      relay_client_(settings_.relay == nullptr || settings_.relay->client_may_relay(client_ip_)) {}

std::string Session::greeting() const {
  std::string out;
  append_reply(out, Reply{220, {}, settings_.hostname + " ESMTP mxgate"});
  return out;
}

std::string Session::too_many_connections(std::string_view hostname) {
  return enhanced_reply(421, "4.7.0", std::string(hostname) + " Too many connections");
}

std::string Session::too_many_connections_from(std::string_view hostname, std::string_view client_ip) {
  return enhanced_reply(421, "4.7.0",
                        std::string(hostname) + " Error: too many connections from " + std::string(client_ip));
}

void Session::receive(std::string_view bytes) {
  if (pos_ > 0) {
    in_.erase(0, pos_);
    pos_ = 0;
  }
  in_.append(bytes);
}

Wait Session::waiting_for() const {
  return (phase_ == Phase::data || phase_ == Phase::bdat) ? Wait::data : Wait::command;
}

void Session::reply(int code, std::string_view enhanced, std::string_view text) {
  append_reply(out_, Reply{code, enhanced, std::string(text)});
}

void Session::reply_error(int code, std::string_view enhanced, std::string_view text) {
  reply(code, enhanced, text);
  if (++errors_ >= settings_.limits.max_errors)
    close_with(enhanced_reply(421, "4.7.0", settings_.hostname + " Too many errors, closing connection"),
               "too many errors");
}

void Session::close_with(std::string_view reply_text, std::string reason) {
  out_ += reply_text;
  phase_ = Phase::closed;
  if (end_reason_.empty()) end_reason_ = std::move(reason);
}

std::string Session::timed_out() {
  phase_ = Phase::closed;
  if (end_reason_.empty()) end_reason_ = "timeout";
  return enhanced_reply(421, "4.4.2", settings_.hostname + " Timeout, closing connection");
}

std::string Session::shutting_down() {
  phase_ = Phase::closed;
  if (end_reason_.empty()) end_reason_ = "shutdown";
  return enhanced_reply(421, "4.3.2", settings_.hostname + " Service shutting down");
}

void Session::disconnected() {
  phase_ = Phase::closed;
  if (end_reason_.empty()) end_reason_ = txn_ ? "disconnect in transaction" : "disconnect";
}

Step Session::take(Next next) {
  Step step{std::move(out_), next};
  out_.clear();
  return step;
}

Step Session::advance() {
  for (;;) {
    // Nothing after a RCPT runs before its check is in (a pipelined DATA
    // must see whether that recipient was accepted).
    if (pending_recipient_) return take(Next::check_recipient);
    if (start_tls_) {
      start_tls_ = false;
      // RFC 3207 section 4.2 / CVE-2011-0411: nothing the client sent before
      // the handshake may be acted on inside TLS.
      in_.clear();
      pos_ = 0;
      return take(Next::start_tls);
    }
    switch (phase_) {
      case Phase::closed:
        return take(Next::close);

      case Phase::discard_line: {
        const auto lf = buffered().find('\n');
        if (lf == std::string_view::npos) {
          pos_ = in_.size();
          return take(Next::read);
        }
        pos_ += lf + 1;
        phase_ = Phase::command;
        continue;
      }

      case Phase::data: {
        auto& txn = *txn_;
        const auto progress = decoder_.feed(buffered(), txn.too_big ? nullptr : &content_);
        pos_ += progress.consumed;
        if (!txn.too_big && decoder_.content_size() > settings_.limits.max_message_size) {
          txn.too_big = true;
          content_.clear();
          content_.shrink_to_fit();
        }
        if (!progress.done) return take(Next::read);
        phase_ = Phase::command;
        if (finish_message(decoder_.bare_newline())) return take(Next::store);
        continue;
      }

      case Phase::bdat: {
        const auto chunk = buffered().substr(0, bdat_remaining_);
        pos_ += chunk.size();
        bdat_remaining_ -= chunk.size();
        if (!bdat_refusal_ && txn_) {
          auto& txn = *txn_;
          txn.bdat_line_endings.feed(chunk);
          txn.bdat_size += chunk.size();
          if (txn.bdat_size > settings_.limits.max_message_size) {
            txn.too_big = true;
            content_.clear();
          } else {
            content_.append(chunk);
          }
        }
        if (bdat_remaining_ > 0) return take(Next::read);
        phase_ = Phase::command;
        if (bdat_refusal_) {
          const Reply refusal = *bdat_refusal_;
          bdat_refusal_.reset();
          reply_error(refusal.code, refusal.enhanced, refusal.text);
          continue;
        }
        auto& txn = *txn_;
        if (bdat_last_) {
          txn.bdat_line_endings.finish();
          if (finish_message(txn.bdat_line_endings.bare_newline())) return take(Next::store);
          continue;
        }
        // RFC 3030 section 2: a failed chunk fails the transaction; the
        // client must not send more chunks (any that come get 503).
        if (txn.too_big || txn.bdat_line_endings.bare_newline()) {
          finish_message(txn.bdat_line_endings.bare_newline());
          continue;
        }
        reply(250, "2.0.0", std::to_string(bdat_chunk_size_) + " octets received");
        continue;
      }

      case Phase::command: {
        const auto view = buffered();
        if (!tls_ && looks_like_tls_record(view)) {
          // Not SMTP at all: answer once for the log, then hang up.
          reply(500, "5.5.2", "TLS handshake on a cleartext SMTP connection; use STARTTLS");
          close_with("", "TLS handshake in cleartext");
          continue;
        }
        const std::size_t limit = settings_.limits.max_command_line;
        const auto lf = view.substr(0, limit).find('\n');
        if (lf == std::string_view::npos) {
          if (view.size() < limit) return take(Next::read);
          // Drop what is known to be the over-long line; discard_line drops
          // the rest of it, up to and including its LF, and no more.
          pos_ += limit;
          phase_ = Phase::discard_line;
          reply_error(500, "5.5.2", "Line too long");
          continue;
        }
        pos_ += lf + 1;
        handle_line(view.substr(0, lf + 1));
        continue;
      }
    }
  }
}

void Session::handle_line(std::string_view line) {
  // line ends in '\n'.  RFC 5321 section 2.3.8: only CRLF ends a line.
  if (line.size() < 2 || line[line.size() - 2] != '\r' ||
      line.substr(0, line.size() - 2).find('\r') != std::string_view::npos) {
    // Where the client thinks this command ends is unknowable, so nothing
    // after it may be executed: refuse and hang up, as Postfix does with
    // smtpd_forbid_bare_newline = reject.
    reply(500, "5.5.2", "Bare CR or LF in command line not allowed");
    close_with("", "bare CR or LF in command");
    return;
  }
  line.remove_suffix(2);
  if (has_invalid_characters(line)) {
    reply_error(500, "5.5.2", "Invalid character in command");
    return;
  }
  const auto space = line.find(' ');
  const auto verb = line.substr(0, space);
  const auto args = space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
  const CommandSpec* spec = find_command(verb);
  if (spec == nullptr) {
    reply_error(500, "5.5.2", "Command unrecognized");
    return;
  }
  (this->*spec->handler)(args);
}

bool Session::greet_args_ok(std::string_view args, std::string_view verb) {
  // Lenient like Postfix by default: any single printable token, since real
  // clients send names such as "DESKTOP_1" that are not domains.
  if (args.empty() || args.size() > 255 || args.find_first_of(" \t") != std::string_view::npos) {
    reply_error(501, "5.5.4", std::string("Syntax: ") + std::string(verb) + " hostname");
    return false;
  }
  return true;
}

void Session::cmd_ehlo(std::string_view args) {
  if (!greet_args_ok(args, "EHLO")) return;
  helo_ = std::string(args);
  ehlo_ = true;
  txn_.reset();  // RFC 5321 section 4.1.4: EHLO implies RSET
  std::vector<std::string> lines{settings_.hostname, "PIPELINING",
                                 "SIZE " + std::to_string(settings_.limits.max_message_size)};
  const bool offer_tls = !tls_ && (settings_.tls_mode == config::TlsMode::may ||
                                   settings_.tls_mode == config::TlsMode::encrypt);
  if (offer_tls) lines.emplace_back("STARTTLS");
  for (const char* keyword : {"8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"})
    lines.emplace_back(keyword);
  append_multiline(out_, 250, lines);
}

void Session::cmd_helo(std::string_view args) {
  if (!greet_args_ok(args, "HELO")) return;
  helo_ = std::string(args);
  ehlo_ = false;
  txn_.reset();
  append_reply(out_, Reply{250, {}, settings_.hostname});
}

// Sequencing common to MAIL, RCPT, DATA and BDAT.
bool Session::ready_for_mail_command(bool needs_transaction) {
  if (helo_.empty()) {
    reply_error(503, "5.5.1", "Send HELO/EHLO first");
    return false;
  }
  if (settings_.tls_mode == config::TlsMode::encrypt && !tls_) {
    reply_error(530, "5.7.0", "Must issue a STARTTLS command first");
    return false;
  }
  if (needs_transaction && !txn_) {
    reply_error(503, "5.5.1", "Need MAIL command first");
    return false;
  }
  return true;
}

void Session::cmd_mail(std::string_view args) {
  if (!ready_for_mail_command(false)) return;
  if (txn_) {
    reply_error(503, "5.5.1", "Nested MAIL command");
    return;
  }
  if (!istarts_with(args, "FROM:")) {
    reply_error(501, "5.5.4", "Syntax: MAIL FROM:<address>");
    return;
  }
  args.remove_prefix(5);
  while (!args.empty() && args.front() == ' ') args.remove_prefix(1);  // tolerated, as by Postfix
  const ParsedPath path = parse_path(args, PathOptions{.allow_null = true});
  if (path.error == AddressError::syntax) {
    reply_error(501, "5.1.7", "Bad sender address syntax");
    return;
  }
  if (!path.rest.empty() && !ehlo_) {
    reply_error(555, "5.5.4", "MAIL parameters require EHLO");
    return;
  }
  MailParameters params;
  std::optional<Reply> refusal;
  const bool syntax_ok = for_each_parameter(path.rest, [&](std::string_view key, std::string_view value, bool has_value) {
    if (iequals(key, "SIZE") && has_value) {
      params.size = parse_size_value(value);
      if (!params.size) refusal = Reply{501, "5.5.4", "Bad SIZE parameter"};
    } else if (iequals(key, "BODY") && has_value) {
      if (iequals(value, "8BITMIME")) {
        params.body_8bitmime = true;
      } else if (!iequals(value, "7BIT")) {
        refusal = Reply{555, "5.5.4", "Unsupported BODY type"};
      }
    } else if (iequals(key, "SMTPUTF8") && !has_value) {
      params.smtputf8 = true;
    } else {
      refusal = Reply{555, "5.5.4", "Unsupported parameter " + std::string(key)};
    }
    return !refusal;
  });
  if (!syntax_ok && !refusal) refusal = Reply{501, "5.5.4", "Bad MAIL parameter syntax"};
  if (refusal) {
    reply_error(refusal->code, refusal->enhanced, refusal->text);
    return;
  }
  if (path.error == AddressError::needs_smtputf8 && !params.smtputf8) {
    reply_error(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
    return;
  }
  // RFC 1870 section 6.2: refuse up front what cannot be accepted.
  if (params.size && *params.size > settings_.limits.max_message_size) {
    reply(552, "5.3.4", "Message size exceeds fixed limit");
    return;
  }
  // Counted once the command is valid; a temporary refusal, like Postfix's
  // smtpd_client_message_rate_limit, so a legitimate burst is only delayed.
  if (!relay_client_ && !environment_.admit_message(client_ip_)) {
    reply(450, "4.7.1", "Error: too much mail from " + client_ip_);
    return;
  }
  txn_ = Transaction{};  // not emplace(): clang 14 rejects it for this nested type
  txn_->sender = path.mailbox;
  txn_->smtputf8 = params.smtputf8;
  txn_->body_8bitmime = params.body_8bitmime;
  txn_->declared_size = params.size.value_or(0);
  ++transactions_begun_;
  reply(250, "2.1.0", "Ok");
}

void Session::cmd_rcpt(std::string_view args) {
  if (!ready_for_mail_command(true)) return;
  txn_->rcpt_attempted = true;
  if (!istarts_with(args, "TO:")) {
    reply_error(501, "5.5.4", "Syntax: RCPT TO:<address>");
    return;
  }
  args.remove_prefix(3);
  while (!args.empty() && args.front() == ' ') args.remove_prefix(1);
  const ParsedPath path =
      parse_path(args, PathOptions{.allow_postmaster = true, .utf8 = txn_->smtputf8});
  if (path.error == AddressError::syntax) {
    reply_error(501, "5.1.3", "Bad recipient address syntax");
    return;
  }
  if (path.error == AddressError::needs_smtputf8) {
    reply_error(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
    return;
  }
  if (!path.rest.empty()) {
    // No RCPT extension (DSN's NOTIFY/ORCPT) is advertised.
    reply_error(555, "5.5.4", "Unsupported RCPT parameter");
    return;
  }
  if (!relay_client_) {
    const auto at = path.mailbox.rfind('@');
    // "<Postmaster>" without a domain is always ours (RFC 5321 section 4.1.1.3).
    if (at != std::string::npos && !settings_.relay->accepts_domain(std::string_view(path.mailbox).substr(at + 1))) {
      reply_error(554, "5.7.1", "<" + path.mailbox + ">: Relay access denied");
      return;
    }
  }
  if (txn_->recipients.size() >= settings_.limits.max_recipients) {
    reply(452, "4.5.3", "Too many recipients");  // RFC 5321 section 4.5.3.1.10
    return;
  }
  if (settings_.check_recipients && !relay_client_) {
    // advance() stops here until the shell has checked it.
    pending_recipient_ = path.mailbox;
    return;
  }
  txn_->recipients.push_back(path.mailbox);
  reply(250, "2.1.5", "Ok");
}

void Session::recipient_checked(const std::optional<Reply>& refusal) {
  if (!pending_recipient_) return;
  std::string recipient = std::move(*pending_recipient_);
  pending_recipient_.reset();
  if (!txn_ || phase_ == Phase::closed) return;
  if (refusal) {
    reply_error(refusal->code, refusal->enhanced, refusal->text);
    return;
  }
  txn_->recipients.push_back(std::move(recipient));
  reply(250, "2.1.5", "Ok");
}

void Session::begin_content() {
  auto& txn = *txn_;
  txn.content_started = true;
  envelope_ = queue::Envelope{};
  envelope_.id = environment_.new_queue_id();
  const auto now = environment_.now();
  envelope_.received_unix =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  content_ = received_header(ReceivedFields{
      .helo = helo_,
      .client_ip = client_ip_,
      .hostname = settings_.hostname,
      .protocol = protocol_name(ehlo_, tls_.has_value(), txn.smtputf8),
      .queue_id = envelope_.id,
      .tls = tls_ ? &*tls_ : nullptr,
      .recipient = txn.recipients.size() == 1 ? std::string_view(txn.recipients[0]) : std::string_view{},
      .when = now,
  });
  header_size_ = content_.size();
  // The size the client declared, so a large message is not copied through
  // a dozen doublings of its buffer.  Bounded: the declaration is only a
  // hint, and memory is promised only to data that arrives.
  if (txn.declared_size > 0) {
    content_.reserve(header_size_ + std::min<std::uint64_t>(
                                        txn.declared_size, std::min<std::uint64_t>(settings_.limits.max_message_size,
                                                                                   kMaxReserveForDeclaredSize)));
  }
}

void Session::cmd_data(std::string_view args) {
  if (!args.empty()) {
    reply_error(501, "5.5.4", "Syntax: DATA");
    return;
  }
  if (!ready_for_mail_command(true)) return;
  if (txn_->recipients.empty()) {
    no_recipients_error();
    return;
  }
  if (txn_->used_bdat) {
    reply_error(503, "5.5.1", "DATA not allowed after BDAT");
    return;
  }
  begin_content();
  decoder_ = DataDecoder{};
  phase_ = Phase::data;
  reply(354, {}, "End data with <CR><LF>.<CR><LF>");
}

void Session::cmd_bdat(std::string_view args) {
  const auto space = args.find(' ');
  const auto size = parse_decimal(args.substr(0, space));
  const auto rest = space == std::string_view::npos ? std::string_view{} : args.substr(space + 1);
  if (!size || (!rest.empty() && !iequals(rest, "LAST"))) {
    // Without a size the chunk boundary is unknown, and reading on would
    // execute message content as commands: hang up instead.
    reply(501, "5.5.4", "Syntax: BDAT size [LAST]");
    close_with("", "bad BDAT syntax");
    return;
  }
  bdat_remaining_ = *size;
  bdat_chunk_size_ = *size;
  bdat_last_ = !rest.empty();
  phase_ = Phase::bdat;
  // RFC 3030 section 2: a refused chunk is still read in full, then answered.
  const auto refuse = [&](Reply r) { bdat_refusal_ = std::move(r); };
  if (helo_.empty()) return refuse({503, "5.5.1", "Send HELO/EHLO first"});
  if (settings_.tls_mode == config::TlsMode::encrypt && !tls_)
    return refuse({530, "5.7.0", "Must issue a STARTTLS command first"});
  if (!txn_) return refuse({503, "5.5.1", "Need MAIL command first"});
  if (txn_->recipients.empty())
    return refuse(txn_->rcpt_attempted ? Reply{554, "5.5.1", "No valid recipients"}
                                       : Reply{503, "5.5.1", "Need RCPT command first"});
  if (!txn_->used_bdat) {
    txn_->used_bdat = true;
    begin_content();
  }
}

bool Session::finish_message(bool bare_newline) {
  const bool too_big = txn_->too_big;
  if (bare_newline || too_big) {
    txn_.reset();
    content_.clear();
    if (bare_newline) {
      reply_error(550, "5.5.2", "Message contains bare CR or LF; not accepted");
    } else {
      reply(552, "5.3.4", "Message size exceeds fixed limit");
    }
    return false;
  }
  envelope_.sender = txn_->sender;
  envelope_.recipients = txn_->recipients;
  envelope_.smtputf8 = txn_->smtputf8;
  envelope_.body_8bitmime = txn_->body_8bitmime;
  envelope_.client_address = client_ip_;
  envelope_.helo = helo_;
  envelope_.tls = tls_ ? tls_->version + " " + tls_->cipher : std::string{};
  return true;
}

void Session::add_header_fields(std::string_view fields) {
  content_.insert(header_size_, fields);
  header_size_ += fields.size();
}

void Session::erase_content(const std::vector<std::pair<std::size_t, std::size_t>>& ranges) {
  // Back to front, so earlier offsets stay valid.
  std::size_t limit = content_.size();
  for (auto it = ranges.rbegin(); it != ranges.rend(); ++it) {
    const auto [begin, end] = *it;
    if (begin < header_size_ || begin > end || end > limit) continue;
    content_.erase(begin, end - begin);
    limit = begin;
  }
}

void Session::replace_content(std::string content) {
  // Our Received field must survive unchanged; a milter may insert fields
  // above it (Sendmail and Postfix let it), so look for it.
  const std::string_view received(content_.data(), header_size_);
  const auto end_of_headers = content.find("\r\n\r\n");
  const auto at = std::string_view(content).substr(0, end_of_headers).find(received);
  if (header_size_ > 0 && at == std::string_view::npos) return;
  header_size_ = (at == std::string_view::npos ? 0 : at) + received.size();
  content_ = std::move(content);
}

void Session::refused(const Reply& refusal) {
  reply(refusal.code, refusal.enhanced, refusal.text);
  end_transaction();
}

void Session::end_transaction() {
  txn_.reset();
  content_.clear();
  if (content_.capacity() > 65536) content_.shrink_to_fit();  // idle sessions stay small
}

void Session::stored(bool ok) {
  if (ok) {
    ++messages_;
    reply(250, "2.0.0", "Ok: queued as " + envelope_.id);
  } else {
    reply(452, "4.3.1", "Insufficient system storage");
  }
  end_transaction();
}

// RFC 5321 section 3.3 allows 503 or 554 here; like Postfix, say which
// mistake it was.
void Session::no_recipients_error() {
  if (txn_->rcpt_attempted) {
    reply_error(554, "5.5.1", "No valid recipients");
  } else {
    reply_error(503, "5.5.1", "Need RCPT command first");
  }
}

void Session::cmd_rset(std::string_view args) {
  if (!args.empty()) {
    reply_error(501, "5.5.4", "Syntax: RSET");
    return;
  }
  txn_.reset();
  reply(250, "2.0.0", "Ok");
}

void Session::cmd_noop(std::string_view) { reply(250, "2.0.0", "Ok"); }

void Session::cmd_quit(std::string_view args) {
  if (!args.empty()) {
    reply_error(501, "5.5.4", "Syntax: QUIT");
    return;
  }
  reply(221, "2.0.0", "Bye");
  close_with("", "quit");
}

void Session::cmd_vrfy(std::string_view args) {
  if (args.empty()) {
    reply_error(501, "5.5.4", "Syntax: VRFY address");
    return;
  }
  // RFC 5321 section 3.5.3: 252 rather than disclose who exists.
  reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
}

void Session::cmd_expn(std::string_view) { reply_error(502, "5.5.1", "EXPN not available"); }

void Session::cmd_help(std::string_view) {
  reply(214, "2.0.0",
        "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS; see RFC 5321");
}

void Session::cmd_starttls(std::string_view args) {
  if (!args.empty()) {
    reply_error(501, "5.5.4", "Syntax: STARTTLS");
    return;
  }
  if (tls_) {
    reply_error(554, "5.5.1", "TLS already active");
    return;
  }
  if (settings_.tls_mode != config::TlsMode::may && settings_.tls_mode != config::TlsMode::encrypt) {
    reply_error(502, "5.5.1", "STARTTLS not available");
    return;
  }
  reply(220, "2.0.0", "Ready to start TLS");
  start_tls_ = true;
  phase_ = Phase::command;
}

void Session::cmd_auth(std::string_view) { reply_error(502, "5.5.1", "AUTH not available"); }

void Session::tls_established(TlsInfo info) {
  // RFC 3207 section 4.2: discard all knowledge obtained from the client.
  tls_ = std::move(info);
  helo_.clear();
  ehlo_ = false;
  txn_.reset();
  in_.clear();
  pos_ = 0;
}

}  // namespace mxgate::smtp
