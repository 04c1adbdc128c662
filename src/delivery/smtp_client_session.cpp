#include "delivery/smtp_client_session.hpp"

#include <algorithm>
#include <charconv>

namespace mxgate::delivery {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto up = [](char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; };
           return up(x) == up(y);
         });
}

// Addresses go into command lines verbatim: a control character (CR, LF,
// NUL, ...) would split or corrupt the command.  The intake already refuses
// them; this is the last line of defence.
bool safe_in_command(std::string_view address) {
  return std::none_of(address.begin(), address.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7F;
  });
}

}  // namespace

std::string_view to_string(SmtpClientSession::Wait wait) {
  switch (wait) {
    case SmtpClientSession::Wait::greeting:
      return "greeting";
    case SmtpClientSession::Wait::command:
      return "command";
    case SmtpClientSession::Wait::data_init:
      return "data_init";
    case SmtpClientSession::Wait::data_end:
      return "data_end";
    case SmtpClientSession::Wait::quit:
      return "quit";
  }
  return "?";
}

Extensions parse_ehlo(const ServerReply& reply) {
  Extensions ext;
  for (std::size_t i = 1; i < reply.lines.size(); ++i) {
    std::string_view line = reply.lines[i];
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    const auto space = line.find(' ');
    const std::string_view keyword = line.substr(0, space);
    std::string_view params = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    while (!params.empty() && params.front() == ' ') params.remove_prefix(1);
    while (!params.empty() && params.back() == ' ') params.remove_suffix(1);
    if (iequals(keyword, "PIPELINING")) {
      ext.pipelining = true;
    } else if (iequals(keyword, "SIZE")) {
      ext.size = true;
      std::uint64_t limit = 0;
      const auto [end, ec] = std::from_chars(params.data(), params.data() + params.size(), limit);
      // RFC 1870: no (or an unreadable) number means no fixed limit announced.
      ext.size_limit = (ec == std::errc{} && end == params.data() + params.size()) ? limit : 0;
    } else if (iequals(keyword, "8BITMIME")) {
      ext.eightbitmime = true;
    } else if (iequals(keyword, "SMTPUTF8")) {
      ext.smtputf8 = true;
    } else if (iequals(keyword, "STARTTLS")) {
      ext.starttls = true;
    } else if (iequals(keyword, "CHUNKING")) {
      ext.chunking = true;
    } else if (iequals(keyword, "ENHANCEDSTATUSCODES")) {
      ext.enhanced_status_codes = true;
    }
  }
  return ext;
}

SmtpClientSession::SmtpClientSession(Settings settings, Transaction transaction, std::string_view content)
    : settings_(std::move(settings)),
      txn_(std::move(transaction)),
      content_(content),
      accepted_(txn_.recipients.size(), false),
      results_(txn_.recipients.size()) {}

SmtpClientSession::Step SmtpClientSession::start() {
  state_ = State::greeting;
  return Step{};
}

SmtpClientSession::Step SmtpClientSession::resume(const Extensions& extensions, bool tls_active) {
  ext_ = extensions;
  tls_active_ = tls_active;
  return begin_transaction();
}

SmtpClientSession::Step SmtpClientSession::on_reply(const ServerReply& reply) {
  switch (state_) {
    case State::greeting:
      return on_greeting(reply);
    case State::ehlo:
      return on_ehlo(reply);
    case State::helo:
      return on_helo(reply);
    case State::starttls:
      return on_starttls(reply);
    case State::transaction:
      return on_transaction_reply(reply);
    case State::content:
      return on_content_reply(reply);
    case State::quit:
      state_ = State::closed;
      return Step{"", false, Next::close};
    case State::tls_handshake:
    case State::closed:
      break;
  }
  state_ = State::closed;
  return Step{"", false, Next::close};
}

SmtpClientSession::Step SmtpClientSession::on_greeting(const ServerReply& reply) {
  if (reply.code != 220) return fail("bad greeting: " + reply.text());
  state_ = State::ehlo;
  return Step{"EHLO " + settings_.helo_name + "\r\n", false, Next::read_reply};
}

SmtpClientSession::Step SmtpClientSession::on_ehlo(const ServerReply& reply) {
  if (reply.positive()) {
    ext_ = parse_ehlo(reply);
    return after_hello();
  }
  if (reply.permanent()) {
    state_ = State::helo;
    return Step{"HELO " + settings_.helo_name + "\r\n", false, Next::read_reply};
  }
  return fail("EHLO refused: " + reply.text());
}

SmtpClientSession::Step SmtpClientSession::on_helo(const ServerReply& reply) {
  if (!reply.positive()) return fail("HELO refused: " + reply.text());
  ext_ = Extensions{};
  return after_hello();
}

SmtpClientSession::Step SmtpClientSession::after_hello() {
  if (settings_.tls != TlsUse::none && !tls_active_) {
    if (ext_.starttls) {
      state_ = State::starttls;
      return Step{"STARTTLS\r\n", false, Next::read_reply};
    }
    if (settings_.tls == TlsUse::required) return fail("STARTTLS not offered");
  }
  return begin_transaction();
}

SmtpClientSession::Step SmtpClientSession::on_starttls(const ServerReply& reply) {
  if (reply.code == 220) {
    state_ = State::tls_handshake;
    return Step{"", false, Next::start_tls};
  }
  if (settings_.tls == TlsUse::required) return fail("STARTTLS refused: " + reply.text());
  // RFC 3207 4: a refused STARTTLS leaves the session as it was.
  if (reply.transient() || reply.permanent()) return begin_transaction();
  // A 2yz other than 220: the server may now expect a handshake; do not talk on.
  return fail("protocol error: unexpected reply to STARTTLS: " + reply.text(), false);
}

SmtpClientSession::Step SmtpClientSession::tls_established() {
  tls_active_ = true;
  ext_ = Extensions{};
  state_ = State::ehlo;
  return Step{"EHLO " + settings_.helo_name + "\r\n", false, Next::read_reply};
}

void SmtpClientSession::tls_failed(std::string error) {
  connection_failed_ = true;
  error_ = std::move(error);
  state_ = State::closed;
}

std::string SmtpClientSession::mail_command() const {
  std::string cmd = "MAIL FROM:<" + txn_.sender + ">";
  if (ext_.size) cmd += " SIZE=" + std::to_string(txn_.content_size);
  if (txn_.body_8bitmime && ext_.eightbitmime) cmd += " BODY=8BITMIME";
  if (txn_.smtputf8) cmd += " SMTPUTF8";
  cmd += "\r\n";
  return cmd;
}

std::string SmtpClientSession::rcpt_command(std::size_t index) const {
  return "RCPT TO:<" + txn_.recipients[index] + ">\r\n";
}

SmtpClientSession::Step SmtpClientSession::begin_transaction() {
  state_ = State::transaction;
  if (stop_before_mail_) return quit();
  if (txn_.smtputf8 && !ext_.smtputf8) {
    set_all(553, "553 5.6.7 SMTPUTF8 not supported by " + settings_.server_name);
    return quit();
  }
  if (ext_.size && ext_.size_limit > 0 && txn_.content_size > ext_.size_limit) {
    set_all(552, "552 5.3.4 Message size " + std::to_string(txn_.content_size) + " exceeds the size limit " +
                     std::to_string(ext_.size_limit) + " of " + settings_.server_name);
    return quit();
  }
  if (!safe_in_command(txn_.sender)) {
    set_all(501, "501 5.1.7 Bad sender address syntax");
    return quit();
  }
  bool any = false;
  for (std::size_t i = 0; i < txn_.recipients.size(); ++i) {
    if (safe_in_command(txn_.recipients[i])) {
      any = true;
    } else {
      results_[i] = RecipientResult{txn_.recipients[i], 501, "501 5.1.3 Bad recipient address syntax"};
    }
  }
  if (!any) return quit();

  pipelining_ = ext_.pipelining;
  std::string out = mail_command();
  pending_.push_back({Expect::mail});
  if (pipelining_) {
    // RFC 2920 3.1: DATA ends the group; the replies come back in order.
    for (std::size_t i = 0; i < txn_.recipients.size(); ++i) {
      if (results_[i]) continue;
      out += rcpt_command(i);
      pending_.push_back({Expect::rcpt, i});
    }
    out += "DATA\r\n";
    pending_.push_back({Expect::data});
  }
  return Step{std::move(out), false, Next::read_reply};
}

SmtpClientSession::Step SmtpClientSession::next_rcpt_or_data() {
  while (next_rcpt_ < txn_.recipients.size() && results_[next_rcpt_]) ++next_rcpt_;
  if (next_rcpt_ < txn_.recipients.size()) {
    const std::size_t i = next_rcpt_++;
    pending_.push_back({Expect::rcpt, i});
    return Step{rcpt_command(i), false, Next::read_reply};
  }
  if (std::find(accepted_.begin(), accepted_.end(), true) == accepted_.end()) return quit();
  pending_.push_back({Expect::data});
  return Step{"DATA\r\n", false, Next::read_reply};
}

SmtpClientSession::Step SmtpClientSession::on_transaction_reply(const ServerReply& reply) {
  if (pending_pos_ >= pending_.size()) return protocol_error("nothing", reply);
  const Pending expected = pending_[pending_pos_++];
  switch (expected.what) {
    case Expect::mail:
      if (reply.intermediate()) return protocol_error("MAIL", reply);
      if (!reply.positive()) {
        mail_refused_ = true;
        mail_reply_ = reply;
      }
      if (pipelining_) return Step{};
      if (mail_refused_) {
        set_all(reply.code, reply.text());
        return quit();
      }
      return next_rcpt_or_data();
    case Expect::rcpt:
      if (!mail_refused_) {
        if (reply.intermediate()) return protocol_error("RCPT", reply);
        if (reply.positive()) {
          accepted_[expected.index] = true;
        } else {
          results_[expected.index] =
              RecipientResult{txn_.recipients[expected.index], reply.code, reply.text()};
        }
      }
      if (pipelining_) return Step{};
      return next_rcpt_or_data();
    case Expect::data:
      break;
  }
  const bool nothing_accepted = std::find(accepted_.begin(), accepted_.end(), true) == accepted_.end();
  if (mail_refused_) set_all(mail_reply_.code, mail_reply_.text());
  if (mail_refused_ || nothing_accepted) {
    if (reply.code == 354) {
      // RFC 2920 3.1: the server took DATA although no recipient was
      // accepted; end the (empty) message and ignore its reply.
      empty_data_sent_ = true;
      state_ = State::content;
      return Step{".\r\n", false, Next::read_reply};  // the end marker alone, none of the content
    }
    return quit();
  }
  if (reply.code == 354) return send_content();
  if (reply.transient() || reply.permanent()) {
    set_accepted(reply);
    return quit();
  }
  return protocol_error("DATA", reply);
}

SmtpClientSession::Step SmtpClientSession::send_content() {
  state_ = State::content;
  content_sent_ = true;
  return Step{{}, true, Next::read_reply};
}

SmtpClientSession::Step SmtpClientSession::on_content_reply(const ServerReply& reply) {
  if (empty_data_sent_) return quit();
  if (reply.intermediate()) return protocol_error("end of data", reply);
  set_accepted(reply);
  transaction_done_ = reply.code != 421;  // 421: the server is closing the connection
  return quit();
}

SmtpClientSession::Step SmtpClientSession::fail(std::string error, bool say_quit) {
  connection_failed_ = true;
  error_ = std::move(error);
  if (say_quit) return quit();
  state_ = State::closed;
  return Step{"", false, Next::close};
}

SmtpClientSession::Step SmtpClientSession::protocol_error(std::string_view stage, const ServerReply& reply) {
  return fail("protocol error: unexpected reply to " + std::string(stage) + ": " + reply.text());
}

SmtpClientSession::Step SmtpClientSession::quit() {
  state_ = State::quit;
  return Step{"QUIT\r\n", false, Next::read_reply};
}

void SmtpClientSession::set_all(int code, const std::string& text) {
  for (std::size_t i = 0; i < results_.size(); ++i)
    if (!results_[i]) results_[i] = RecipientResult{txn_.recipients[i], code, text};
}

void SmtpClientSession::set_accepted(const ServerReply& reply) {
  const std::string text = reply.text();
  for (std::size_t i = 0; i < results_.size(); ++i)
    if (accepted_[i] && !results_[i]) results_[i] = RecipientResult{txn_.recipients[i], reply.code, text};
}

void SmtpClientSession::connection_lost(std::string_view why) {
  if (finished()) {
    state_ = State::closed;
    return;
  }
  std::string what;
  switch (state_) {
    case State::greeting:
      what = "the greeting";
      break;
    case State::ehlo:
      what = "the reply to EHLO";
      break;
    case State::helo:
      what = "the reply to HELO";
      break;
    case State::starttls:
      what = "the reply to STARTTLS";
      break;
    case State::tls_handshake:
      what = "the TLS handshake";
      break;
    case State::transaction: {
      const Expect e = pending_pos_ < pending_.size() ? pending_[pending_pos_].what : Expect::mail;
      what = e == Expect::mail   ? "the reply to MAIL"
             : e == Expect::rcpt ? "the reply to RCPT"
                                 : "the reply to DATA";
      break;
    }
    case State::content:
      what = "the reply to end of data";
      break;
    case State::quit:
    case State::closed:
      break;
  }
  connection_failed_ = true;
  error_ = std::string(why) + " while waiting for " + what;
  state_ = State::closed;
}

SmtpClientSession::Wait SmtpClientSession::waiting_for() const {
  switch (state_) {
    case State::greeting:
      return Wait::greeting;
    case State::transaction:
      if (pending_pos_ < pending_.size() && pending_[pending_pos_].what == Expect::data)
        return Wait::data_init;
      return Wait::command;
    case State::content:
      return Wait::data_end;
    case State::quit:
    case State::closed:
      return Wait::quit;
    case State::ehlo:
    case State::helo:
    case State::starttls:
    case State::tls_handshake:
      break;
  }
  return Wait::command;
}

AttemptResult SmtpClientSession::result() const {
  AttemptResult r;
  r.connection_failed = connection_failed_;
  r.error = error_;
  for (const auto& result : results_)
    if (result) r.recipients.push_back(*result);
  return r;
}

}  // namespace mxgate::delivery
