// The SMTP session state machine (src/smtp/session.hpp), fed bytes and events
// with a fixed clock and queue IDs.  Every reply is asserted as exact bytes.
#include "fixed_session_environment.hpp"
#include "smtp/session.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::smtp {
namespace {

using namespace std::string_literals;
using config::TlsMode;

constexpr std::int64_t kNowUnix = test_support::kFixedNowUnix;
constexpr std::string_view kDate = "Thu, 29 Feb 2024 13:05:09 +0000";
constexpr std::string_view kHost = "mx.example.test";
constexpr std::string_view kClientIp = "192.0.2.7";

using test_support::FixedEnvironment;

TlsInfo test_tls() { return TlsInfo{"TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256}; }

SessionSettings make_settings(TlsMode mode = TlsMode::none, config::Limits limits = {}) {
  return SessionSettings{std::string(kHost), mode, limits};
}

std::string ehlo_reply(std::uint64_t size = config::Limits{}.max_message_size, bool starttls = false) {
  std::string r = "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE " + std::to_string(size) + "\r\n";
  if (starttls) r += "250-STARTTLS\r\n";
  r += "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
  return r;
}

std::string header(std::string_view helo, std::string_view protocol, std::string_view id,
                   std::string_view recipient, bool tls = false) {
  std::string h = "Received: from " + std::string(helo) +
                  " ([192.0.2.7])\r\n\tby mx.example.test (mxgate) with " + std::string(protocol) + " id " +
                  std::string(id) + "\r\n";
  if (tls) h += "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n";
  h += "\t";
  if (!recipient.empty()) h += "for <" + std::string(recipient) + ">";
  h += "; " + std::string(kDate) + "\r\n";
  return h;
}

// Drives one session the way the shell does.  feed() hands bytes over and
// pumps advance() until the session wants more input, closes or asks for a
// handshake; a store is answered at once with store_ok.
class Harness {
 public:
  explicit Harness(SessionSettings settings = make_settings())
      : session_(std::move(settings), env_, std::string(kClientIp)) {}

  std::string feed(std::string_view bytes) {
    session_.receive(bytes);
    return pump();
  }

  std::string pump() {
    std::string out;
    for (;;) {
      Step step = session_.advance();
      out += step.output;
      last_ = step.next;
      steps_.push_back(step.next);
      if (step.next != Next::store) return out;
      contents_.push_back(session_.content());
      envelopes_.push_back(session_.envelope());
      session_.stored(store_ok);
    }
  }

  // EHLO and a transaction ready for DATA or BDAT.
  void start_transaction(std::string_view mail_args = "", std::string_view rcpt = "c@example.net") {
    std::string in = "EHLO client.example\r\nMAIL FROM:<a@example.org>";
    if (!mail_args.empty()) in += " " + std::string(mail_args);
    in += "\r\nRCPT TO:<" + std::string(rcpt) + ">\r\n";
    const std::string out = feed(in);
    ASSERT_EQ(out, ehlo_reply(settings_size_) + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
  }

  Session& session() { return session_; }
  Next last() const { return last_; }
  bool ever(Next n) const { return std::find(steps_.begin(), steps_.end(), n) != steps_.end(); }
  const std::vector<std::string>& contents() const { return contents_; }
  const std::vector<queue::Envelope>& envelopes() const { return envelopes_; }

  bool store_ok = true;
  std::uint64_t settings_size_ = config::Limits{}.max_message_size;

 private:
  FixedEnvironment env_;
  Session session_;
  Next last_ = Next::read;
  std::vector<Next> steps_;
  std::vector<std::string> contents_;
  std::vector<queue::Envelope> envelopes_;
};

Harness with_limits(config::Limits limits, TlsMode mode = TlsMode::none) {
  return Harness(make_settings(mode, limits));
}

// --- Greeting and connection-level replies ---------------------------------------------

TEST(SessionGreeting, Text) {
  FixedEnvironment env;
  Session s(make_settings(), env, "192.0.2.7");
  EXPECT_EQ(s.greeting(), "220 mx.example.test ESMTP mxgate\r\n");
  EXPECT_EQ(Session::too_many_connections("mx.example.test"),
            "421 4.7.0 mx.example.test Too many connections\r\n");
}

TEST(SessionGreeting, NothingToDoWithoutInput) {
  Harness h;
  EXPECT_EQ(h.pump(), "");
  EXPECT_EQ(h.last(), Next::read);
  EXPECT_EQ(h.session().waiting_for(), Wait::command);
  EXPECT_EQ(h.session().end_reason(), "");
}

TEST(SessionGreeting, PartialLineWaits) {
  Harness h;
  EXPECT_EQ(h.feed("NO"), "");
  EXPECT_EQ(h.last(), Next::read);
  EXPECT_EQ(h.feed("OP\r"), "");
  EXPECT_EQ(h.feed("\n"), "250 2.0.0 Ok\r\n");
}

// --- EHLO and HELO ---------------------------------------------------------------------

TEST(SessionEhlo, NoStartTlsWithoutTls) {
  Harness h;
  EXPECT_EQ(h.feed("EHLO client.example\r\n"), ehlo_reply());
  EXPECT_EQ(h.session().helo(), "client.example");
}

TEST(SessionEhlo, StartTlsAdvertisedForMayAndEncrypt) {
  for (const TlsMode mode : {TlsMode::may, TlsMode::encrypt}) {
    Harness h(make_settings(mode));
    EXPECT_EQ(h.feed("EHLO client.example\r\n"), ehlo_reply(36700160, true));
  }
}

TEST(SessionEhlo, StartTlsNotAdvertisedAfterTls) {
  Harness h(make_settings(TlsMode::may));
  EXPECT_EQ(h.feed("STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
  EXPECT_EQ(h.last(), Next::start_tls);
  h.session().tls_established(test_tls());
  EXPECT_EQ(h.pump(), "");
  EXPECT_EQ(h.feed("EHLO client.example\r\n"), ehlo_reply());
}

TEST(SessionEhlo, ImplicitTlsNeverAdvertisesStartTls) {
  Harness h(make_settings(TlsMode::implicit));
  h.session().tls_established(test_tls());
  EXPECT_EQ(h.session().greeting(), "220 mx.example.test ESMTP mxgate\r\n");
  EXPECT_EQ(h.feed("EHLO client.example\r\n"), ehlo_reply());
  EXPECT_EQ(h.feed("STARTTLS\r\n"), "554 5.5.1 TLS already active\r\n");
}

TEST(SessionEhlo, SizeReflectsLimit) {
  Harness h = with_limits({.max_message_size = 1234});
  EXPECT_EQ(h.feed("EHLO client.example\r\n"), ehlo_reply(1234));
}

TEST(SessionEhlo, CaseInsensitiveVerb) {
  Harness h;
  EXPECT_EQ(h.feed("ehlo client.example\r\n"), ehlo_reply());
  EXPECT_EQ(h.feed("eHlO other\r\n"), ehlo_reply());
  EXPECT_EQ(h.session().helo(), "other");
}

TEST(SessionEhlo, ArgumentSyntax) {
  Harness h;
  EXPECT_EQ(h.feed("EHLO\r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
  EXPECT_EQ(h.feed("EHLO \r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
  EXPECT_EQ(h.feed("EHLO a b\r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
  EXPECT_EQ(h.feed("EHLO " + std::string(256, 'a') + "\r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
  EXPECT_EQ(h.session().helo(), "");
  EXPECT_EQ(h.feed("EHLO " + std::string(255, 'a') + "\r\n"), ehlo_reply());
  EXPECT_EQ(h.feed("EHLO [192.0.2.7]\r\n"), ehlo_reply());
  EXPECT_EQ(h.feed("EHLO DESKTOP_1\r\n"), ehlo_reply());
  EXPECT_EQ(h.session().helo(), "DESKTOP_1");
}

TEST(SessionHelo, ReplyAndSyntax) {
  Harness h;
  EXPECT_EQ(h.feed("HELO\r\n"), "501 5.5.4 Syntax: HELO hostname\r\n");
  EXPECT_EQ(h.feed("HELO a b\r\n"), "501 5.5.4 Syntax: HELO hostname\r\n");
  EXPECT_EQ(h.feed("HELO client.example\r\n"), "250 mx.example.test\r\n");
  EXPECT_EQ(h.session().helo(), "client.example");
}

TEST(SessionHelo, ParametersRequireEhlo) {
  Harness h;
  EXPECT_EQ(h.feed("HELO client.example\r\n"), "250 mx.example.test\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SIZE=10\r\n"), "555 5.5.4 MAIL parameters require EHLO\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> BODY=8BITMIME\r\n"),
            "555 5.5.4 MAIL parameters require EHLO\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\n"), "250 2.1.0 Ok\r\n");
}

TEST(SessionHelo, EhloAndHeloResetTheTransaction) {
  Harness h;
  h.start_transaction();
  EXPECT_EQ(h.feed("EHLO again\r\n"), ehlo_reply());
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "503 5.5.1 Need MAIL command first\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\n"), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.feed("HELO again\r\n"), "250 mx.example.test\r\n");
  EXPECT_EQ(h.feed("DATA\r\n"), "503 5.5.1 Need MAIL command first\r\n");
}

TEST(SessionSequencing, EachAcceptedMailBeginsOneTransactionForTheMailStageChecks) {
  Harness h;
  EXPECT_EQ(h.session().transactions_begun(), 0u);
  EXPECT_EQ(h.session().mail_from(), nullptr);
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<bad address>\r\n").substr(0, 3), "501");  // refused: no transaction
  EXPECT_EQ(h.session().transactions_begun(), 0u);
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\n"), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.session().transactions_begun(), 1u);
  ASSERT_NE(h.session().mail_from(), nullptr);
  EXPECT_EQ(*h.session().mail_from(), "a@example.org");
  EXPECT_EQ(h.feed("MAIL FROM:<b@example.org>\r\n").substr(0, 3), "503");  // nested MAIL: same transaction
  EXPECT_EQ(h.session().transactions_begun(), 1u);
  EXPECT_EQ(h.feed("RSET\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.session().mail_from(), nullptr);
  EXPECT_EQ(h.feed("MAIL FROM:<>\r\nRCPT TO:<c@example.net>\r\nDATA\r\nx\r\n.\r\n").substr(0, 14),
            "250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.session().transactions_begun(), 2u);
  EXPECT_EQ(h.session().mail_from(), nullptr);  // stored: the transaction is over
}

// --- Simple commands ---------------------------------------------------------------------

TEST(SessionCommands, EveryReplyText) {
  Harness h;
  EXPECT_EQ(h.feed("NOOP\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.feed("NOOP with argument\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.feed("RSET\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.feed("RSET x\r\n"), "501 5.5.4 Syntax: RSET\r\n");
  EXPECT_EQ(h.feed("VRFY postmaster\r\n"),
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
  EXPECT_EQ(h.feed("VRFY\r\n"), "501 5.5.4 Syntax: VRFY address\r\n");
  EXPECT_EQ(h.feed("EXPN list\r\n"), "502 5.5.1 EXPN not available\r\n");
  EXPECT_EQ(h.feed("HELP\r\n"),
            "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS; "
            "see RFC 5321\r\n");
  EXPECT_EQ(h.feed("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), "502 5.5.1 AUTH not available\r\n");
  EXPECT_EQ(h.feed("STARTTLS\r\n"), "502 5.5.1 STARTTLS not available\r\n");
  EXPECT_EQ(h.feed("FOO\r\n"), "500 5.5.2 Command unrecognized\r\n");
  EXPECT_EQ(h.feed("\r\n"), "500 5.5.2 Command unrecognized\r\n");
  EXPECT_EQ(h.feed(" NOOP\r\n"), "500 5.5.2 Command unrecognized\r\n");
  EXPECT_EQ(h.feed("QUIT x\r\n"), "501 5.5.4 Syntax: QUIT\r\n");
  EXPECT_EQ(h.last(), Next::read);
  EXPECT_EQ(h.feed("QUIT\r\n"), "221 2.0.0 Bye\r\n");
  EXPECT_EQ(h.last(), Next::close);
  EXPECT_EQ(h.session().end_reason(), "quit");
}

TEST(SessionCommands, NothingAnsweredAfterQuit) {
  Harness h;
  EXPECT_EQ(h.feed("QUIT\r\nNOOP\r\n"), "221 2.0.0 Bye\r\n");
  EXPECT_EQ(h.last(), Next::close);
  EXPECT_EQ(h.feed("NOOP\r\n"), "");
  EXPECT_EQ(h.last(), Next::close);
}

TEST(SessionCommands, LowercaseVerbs) {
  Harness h;
  EXPECT_EQ(h.feed("noop\r\nhelo x\r\nmail from:<a@b>\r\nrcpt to:<c@d>\r\nrset\r\nquit\r\n"),
            "250 2.0.0 Ok\r\n250 mx.example.test\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
            "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n");
}

// --- Sequencing -----------------------------------------------------------------------------

TEST(SessionSequencing, MailCommandsBeforeHelo) {
  Harness h;
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\n"), "503 5.5.1 Send HELO/EHLO first\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "503 5.5.1 Send HELO/EHLO first\r\n");
  EXPECT_EQ(h.feed("DATA\r\n"), "503 5.5.1 Send HELO/EHLO first\r\n");
}

TEST(SessionSequencing, RcptAndDataNeedMail) {
  Harness h;
  EXPECT_EQ(h.feed("EHLO client.example\r\n"), ehlo_reply());
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "503 5.5.1 Need MAIL command first\r\n");
  EXPECT_EQ(h.feed("DATA\r\n"), "503 5.5.1 Need MAIL command first\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\n"), "250 2.1.0 Ok\r\n");
  // No RCPT given at all: a sequence error (503); RCPTs given but all
  // refused: no valid recipients (554), as RFC 5321 section 3.3 allows.
  EXPECT_EQ(h.feed("DATA\r\n"), "503 5.5.1 Need RCPT command first\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<bad address>\r\n"), "501 5.1.3 Bad recipient address syntax\r\n");
  EXPECT_EQ(h.feed("DATA\r\n"), "554 5.5.1 No valid recipients\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\n"), "503 5.5.1 Nested MAIL command\r\n");
  EXPECT_EQ(h.feed("RSET\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "503 5.5.1 Need MAIL command first\r\n");
}

TEST(SessionSequencing, DataSyntaxCheckedFirst) {
  Harness h;
  EXPECT_EQ(h.feed("DATA x\r\n"), "501 5.5.4 Syntax: DATA\r\n");
}

// --- MAIL FROM ------------------------------------------------------------------------------

TEST(SessionMail, PathForms) {
  Harness h;
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\n"), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.feed("RSET\r\nMAIL FROM: <a@example.org>\r\n"), "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.feed("RSET\r\nMAIL FROM:<>\r\n"), "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.feed("RSET\r\nmail from:<@relay.example:a@example.org>\r\n"),
            "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.feed("RSET\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.feed("MAIL\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  EXPECT_EQ(h.feed("MAIL TO:<a@example.org>\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:a@example.org\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<Postmaster>\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a..b@example.org>\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
}

TEST(SessionMail, SizeAtLimitAndOnePast) {
  Harness h = with_limits({.max_message_size = 1000});
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SIZE=1001\r\n"),
            "552 5.3.4 Message size exceeds fixed limit\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "503 5.5.1 Need MAIL command first\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SIZE=1000\r\n"), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.feed("RSET\r\nMAIL FROM:<a@example.org> size=0\r\n"), "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n");
}

TEST(SessionMail, BadSize) {
  Harness h;
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SIZE=abc\r\n"), "501 5.5.4 Bad SIZE parameter\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SIZE=-1\r\n"), "501 5.5.4 Bad SIZE parameter\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SIZE=12x\r\n"), "501 5.5.4 Bad SIZE parameter\r\n");
  // RFC 1870: any digit string is valid; one past 2^64 is simply too big.
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SIZE=123456789012345678901\r\n"),
            "552 5.3.4 Message size exceeds fixed limit\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SIZE=\r\n"), "501 5.5.4 Bad MAIL parameter syntax\r\n");
  // A huge but representable value is over the limit, not malformed.
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SIZE=18446744073709551615\r\n"),
            "552 5.3.4 Message size exceeds fixed limit\r\n");
}

TEST(SessionMail, BodyParameter) {
  Harness h;
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n"), "555 5.5.4 Unsupported BODY type\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> BODY=9BIT\r\n"), "555 5.5.4 Unsupported BODY type\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> BODY=7BIT\r\n"), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.feed("RSET\r\nMAIL FROM:<a@example.org> body=8bitmime\r\n"),
            "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n");
}

TEST(SessionMail, UnknownAndMalformedParameters) {
  Harness h;
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> FOO=bar\r\n"), "555 5.5.4 Unsupported parameter FOO\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> RET=HDRS\r\n"), "555 5.5.4 Unsupported parameter RET\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SMTPUTF8=yes\r\n"),
            "555 5.5.4 Unsupported parameter SMTPUTF8\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> =x\r\n"), "501 5.5.4 Bad MAIL parameter syntax\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> -X=1\r\n"), "501 5.5.4 Bad MAIL parameter syntax\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> X=a=b\r\n"), "501 5.5.4 Bad MAIL parameter syntax\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>SIZE=1\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org> SIZE=10  BODY=8BITMIME SMTPUTF8\r\n"), "250 2.1.0 Ok\r\n");
}

TEST(SessionMail, Smtputf8) {
  Harness h;
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<j\xC3\xB6rg@example.org>\r\n"),
            "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<j\xC3\xB6rg@example.org> SMTPUTF8\r\n"), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<b\xC3\xA9@b\xC3\xBC"
                   "cher.example>\r\n"),
            "250 2.1.5 Ok\r\n");
  EXPECT_EQ(h.feed("RSET\r\nMAIL FROM:<a@example.org>\r\n"), "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<b\xC3\xA9@example.net>\r\n"),
            "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
}

// --- RCPT TO --------------------------------------------------------------------------------

TEST(SessionRcpt, Forms) {
  Harness h;
  h.feed("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "250 2.1.5 Ok\r\n");
  EXPECT_EQ(h.feed("RCPT TO: <d@example.net>\r\n"), "250 2.1.5 Ok\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<Postmaster>\r\n"), "250 2.1.5 Ok\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<>\r\n"), "501 5.1.3 Bad recipient address syntax\r\n");
  EXPECT_EQ(h.feed("RCPT TO:c@example.net\r\n"), "501 5.1.3 Bad recipient address syntax\r\n");
  EXPECT_EQ(h.feed("RCPT FROM:<c@example.net>\r\n"), "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
  EXPECT_EQ(h.feed("RCPT\r\n"), "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net> NOTIFY=NEVER\r\n"), "555 5.5.4 Unsupported RCPT parameter\r\n");
}

TEST(SessionRcpt, MaxRecipientsAtLimitAndOnePast) {
  Harness h = with_limits({.max_recipients = 3, .max_errors = 2});
  h.feed("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<r1@example.net>\r\nRCPT TO:<r2@example.net>\r\nRCPT TO:<r3@example.net>\r\n"),
            "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<r4@example.net>\r\n"), "452 4.5.3 Too many recipients\r\n");
  // Not a protocol error: max_errors=2 is not reached by repeated 452s.
  EXPECT_EQ(h.feed("RCPT TO:<r5@example.net>\r\nRCPT TO:<r6@example.net>\r\n"),
            "452 4.5.3 Too many recipients\r\n452 4.5.3 Too many recipients\r\n");
  EXPECT_EQ(h.last(), Next::read);
  EXPECT_EQ(h.feed("DATA\r\nx\r\n.\r\n"),
            "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q0000001\r\n");
  ASSERT_EQ(h.envelopes().size(), 1u);
  EXPECT_EQ(h.envelopes()[0].recipients,
            (std::vector<std::string>{"r1@example.net", "r2@example.net", "r3@example.net"}));
}

// --- DATA -----------------------------------------------------------------------------------

TEST(SessionData, OneMessageEndToEnd) {
  Harness h;
  h.start_transaction();
  EXPECT_EQ(h.feed("DATA\r\n"), "354 End data with <CR><LF>.<CR><LF>\r\n");
  EXPECT_EQ(h.session().waiting_for(), Wait::data);
  EXPECT_EQ(h.feed("Subject: hi\r\n\r\n..dotted\r\nbody\r\n"), "");
  EXPECT_EQ(h.last(), Next::read);
  EXPECT_EQ(h.feed(".\r\n"), "250 2.0.0 Ok: queued as Q0000001\r\n");
  EXPECT_EQ(h.session().waiting_for(), Wait::command);
  ASSERT_EQ(h.contents().size(), 1u);
  EXPECT_EQ(h.contents()[0], header("client.example", "ESMTP", "Q0000001", "c@example.net") +
                                 "Subject: hi\r\n\r\n.dotted\r\nbody\r\n");
  EXPECT_EQ(h.session().messages_accepted(), 1u);
  EXPECT_EQ(h.session().content(), "") << "content is released after stored()";
  EXPECT_EQ(h.feed("QUIT\r\n"), "221 2.0.0 Bye\r\n");
}

TEST(SessionData, EnvelopeFieldsAfterStore) {
  Harness h;
  h.feed(
      "EHLO client.example\r\nMAIL FROM:<j\xC3\xB6rg@example.org> BODY=8BITMIME SMTPUTF8\r\n"
      "RCPT TO:<c@example.net>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nx\r\n.\r\n");
  ASSERT_EQ(h.envelopes().size(), 1u);
  const queue::Envelope& e = h.envelopes()[0];
  EXPECT_EQ(e.id, "Q0000001");
  EXPECT_EQ(e.sender, "j\xC3\xB6rg@example.org");
  EXPECT_EQ(e.recipients, (std::vector<std::string>{"c@example.net", "Postmaster"}));
  EXPECT_TRUE(e.smtputf8);
  EXPECT_TRUE(e.body_8bitmime);
  EXPECT_EQ(e.client_address, "192.0.2.7");
  EXPECT_EQ(e.helo, "client.example");
  EXPECT_EQ(e.tls, "");
  EXPECT_EQ(e.received_unix, kNowUnix);
  // Two recipients: the Received header names none.
  EXPECT_EQ(h.contents()[0], header("client.example", "UTF8SMTP", "Q0000001", "") + "x\r\n");
}

TEST(SessionData, NullSenderAndPlainEnvelope) {
  Harness h;
  h.feed("EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<c@example.net>\r\nDATA\r\nx\r\n.\r\n");
  ASSERT_EQ(h.envelopes().size(), 1u);
  EXPECT_EQ(h.envelopes()[0].sender, "");
  EXPECT_FALSE(h.envelopes()[0].smtputf8);
  EXPECT_FALSE(h.envelopes()[0].body_8bitmime);
}

TEST(SessionData, HeloMessageUsesSmtpProtocol) {
  Harness h;
  h.feed("HELO old.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\nx\r\n.\r\n");
  ASSERT_EQ(h.contents().size(), 1u);
  EXPECT_EQ(h.contents()[0], header("old.example", "SMTP", "Q0000001", "c@example.net") + "x\r\n");
}

TEST(SessionData, QueueIdsAdvancePerMessage) {
  Harness h;
  const std::string msg = "MAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\nx\r\n.\r\n";
  EXPECT_EQ(h.feed("EHLO client.example\r\n" + msg + msg),
            ehlo_reply() +
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                "250 2.0.0 Ok: queued as Q0000001\r\n" +
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                "250 2.0.0 Ok: queued as Q0000002\r\n");
  EXPECT_EQ(h.session().messages_accepted(), 2u);
  ASSERT_EQ(h.envelopes().size(), 2u);
  EXPECT_EQ(h.envelopes()[1].id, "Q0000002");
}

TEST(SessionData, StoreFailureIs452AndResetsTransaction) {
  Harness h;
  h.store_ok = false;
  h.start_transaction();
  EXPECT_EQ(h.feed("DATA\r\nx\r\n.\r\n"),
            "354 End data with <CR><LF>.<CR><LF>\r\n452 4.3.1 Insufficient system storage\r\n");
  EXPECT_EQ(h.session().messages_accepted(), 0u);
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "503 5.5.1 Need MAIL command first\r\n");
  h.store_ok = true;
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\ny\r\n.\r\n"),
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
            "250 2.0.0 Ok: queued as Q0000002\r\n");
}

TEST(SessionData, MessageAtSizeLimitIsAccepted) {
  Harness h = with_limits({.max_message_size = 10});
  h.settings_size_ = 10;
  h.start_transaction();
  // Decoded content "12345678\r\n" is exactly 10 octets; the stuffing dot does not count.
  EXPECT_EQ(h.feed("DATA\r\n.12345678\r\n.\r\n"),
            "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q0000001\r\n");
  ASSERT_EQ(h.contents().size(), 1u);
  EXPECT_EQ(h.contents()[0], header("client.example", "ESMTP", "Q0000001", "c@example.net") + "12345678\r\n");
}

TEST(SessionData, MessageOneBytePastLimitIsNeverStored) {
  Harness h = with_limits({.max_message_size = 10});
  h.settings_size_ = 10;
  h.start_transaction();
  h.feed("DATA\r\n123456789\r\n.\r\nNOOP\r\n");
  EXPECT_FALSE(h.ever(Next::store));
  EXPECT_TRUE(h.contents().empty());
  EXPECT_EQ(h.session().messages_accepted(), 0u);
}

TEST(SessionData, MessageOneBytePastLimitIsAnswered552) {
  Harness h = with_limits({.max_message_size = 10});
  h.settings_size_ = 10;
  h.start_transaction();
  const std::string out = h.feed("DATA\r\n123456789\r\n.\r\nNOOP\r\n");
  EXPECT_EQ(out,
            "354 End data with <CR><LF>.<CR><LF>\r\n552 5.3.4 Message size exceeds fixed limit\r\n"
            "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "503 5.5.1 Need MAIL command first\r\n");
}

TEST(SessionData, MessageOverLimitSentInPiecesIsAnswered552) {
  Harness h = with_limits({.max_message_size = 10});
  h.settings_size_ = 10;
  h.start_transaction();
  EXPECT_EQ(h.feed("DATA\r\n"), "354 End data with <CR><LF>.<CR><LF>\r\n");
  EXPECT_EQ(h.feed("0123456789abcdef\r\n"), "");
  const std::string out = h.feed(".\r\n");
  EXPECT_FALSE(h.ever(Next::store));
  EXPECT_EQ(out, "552 5.3.4 Message size exceeds fixed limit\r\n");
}

TEST(SessionData, BareLfInContentIsNeverStored) {
  Harness h;
  h.start_transaction();
  h.feed("DATA\r\nline one\nline two\r\n.\r\n");
  EXPECT_FALSE(h.ever(Next::store));
  EXPECT_TRUE(h.contents().empty());
}

TEST(SessionData, BareLfInContentIsAnswered550) {
  Harness h;
  h.start_transaction();
  EXPECT_EQ(h.feed("DATA\r\n"), "354 End data with <CR><LF>.<CR><LF>\r\n");
  const std::string out = h.feed("line one\nline two\r\n.\r\n");
  EXPECT_EQ(out, "550 5.5.2 Message contains bare CR or LF; not accepted\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "503 5.5.1 Need MAIL command first\r\n");
}

TEST(SessionData, SmugglingVariantsNeverSplitAMessage) {
  // The smuggled second transaction must stay content of the first message:
  // no MAIL/RCPT/DATA reply for it, and nothing is stored.
  for (const std::string& variant :
       {"\n.\n"s, "\r.\r"s, "\n.\r\n"s, "\r\n.\r"s, "\r\n.\n"s, "\r\n.\r\r\n"s}) {
    SCOPED_TRACE(testing::PrintToString(variant));
    Harness h;
    h.start_transaction();
    EXPECT_EQ(h.feed("DATA\r\n"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    const std::string out = h.feed("legit\r\nbody" + variant +
                                   "MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\n"
                                   "DATA\r\nevil\r\n.\r\n");
    EXPECT_FALSE(h.ever(Next::store));
    EXPECT_EQ(out.find("250 2.1.0"), std::string::npos) << out;
    EXPECT_EQ(out.find("354"), std::string::npos) << out;
  }
}

TEST(SessionData, SmugglingVariantsAreAnswered550) {
  for (const std::string& variant :
       {"\n.\n"s, "\r.\r"s, "\n.\r\n"s, "\r\n.\r"s, "\r\n.\n"s, "\r\n.\r\r\n"s}) {
    SCOPED_TRACE(testing::PrintToString(variant));
    Harness h;
    h.start_transaction();
    const std::string out = h.feed("DATA\r\nlegit\r\nbody" + variant +
                                   "MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\n"
                                   "DATA\r\nevil\r\n.\r\nNOOP\r\n");
    EXPECT_EQ(out,
              "354 End data with <CR><LF>.<CR><LF>\r\n"
              "550 5.5.2 Message contains bare CR or LF; not accepted\r\n250 2.0.0 Ok\r\n");
  }
}

TEST(SessionData, BareNewlineCountsTowardsMaxErrors) {
  // A refused bare-newline message counts as a protocol error.
  Harness h = with_limits({.max_errors = 1});
  h.start_transaction();
  const std::string out = h.feed("DATA\r\na\nb\r\n.\r\n");
  EXPECT_EQ(h.last(), Next::close);
  EXPECT_FALSE(h.ever(Next::store));
  EXPECT_EQ(out,
            "354 End data with <CR><LF>.<CR><LF>\r\n"
            "550 5.5.2 Message contains bare CR or LF; not accepted\r\n"
            "421 4.7.0 mx.example.test Too many errors, closing connection\r\n");
}

// --- Pipelining -------------------------------------------------------------------------------

TEST(SessionPipelining, RepliesBatchedInOrderInOneStep) {
  FixedEnvironment env;
  Session s(make_settings(), env, "192.0.2.7");
  s.receive(
      "EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\n"
      "RCPT TO:<bad>\r\nRCPT TO:<d@example.net>\r\nDATA\r\n");
  Step step = s.advance();
  EXPECT_EQ(step.output, ehlo_reply() +
                             "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n501 5.1.3 Bad recipient address syntax\r\n"
                             "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
  EXPECT_EQ(step.next, Next::read);

  s.receive("hello\r\n.\r\nMAIL FROM:<e@example.org>\r\nRCPT TO:<f@example.net>\r\nNOOP\r\n");
  step = s.advance();
  EXPECT_EQ(step.output, "");
  EXPECT_EQ(step.next, Next::store);
  EXPECT_EQ(s.envelope().recipients, (std::vector<std::string>{"c@example.net", "d@example.net"}));
  s.stored(true);
  step = s.advance();
  EXPECT_EQ(step.output,
            "250 2.0.0 Ok: queued as Q0000001\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n");
  EXPECT_EQ(step.next, Next::read);
  step = s.advance();
  EXPECT_EQ(step.output, "");
  EXPECT_EQ(step.next, Next::read);
}

TEST(SessionPipelining, StoreStepCarriesRepliesBatchedBeforeIt) {
  FixedEnvironment env;
  Session s(make_settings(), env, "192.0.2.7");
  s.receive(
      "EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\n"
      "DATA\r\nhello\r\n.\r\nQUIT\r\n");
  Step step = s.advance();
  EXPECT_EQ(step.output,
            ehlo_reply() + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
  EXPECT_EQ(step.next, Next::store);
  s.stored(true);
  step = s.advance();
  EXPECT_EQ(step.output, "250 2.0.0 Ok: queued as Q0000001\r\n221 2.0.0 Bye\r\n");
  EXPECT_EQ(step.next, Next::close);
}

// --- Grinding whole sessions ---------------------------------------------------------------------

struct Transcript {
  std::string output;
  std::vector<std::string> stored;
  std::vector<queue::Envelope> envelopes;
  bool closed = false;
};

// Runs a session over input cut at the given offsets; stores succeed.
Transcript run_split(std::string_view input, const std::vector<std::size_t>& cuts,
                     SessionSettings settings = make_settings()) {
  FixedEnvironment env;
  Session s(std::move(settings), env, "192.0.2.7");
  Transcript t;
  std::size_t start = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(input.size());
  for (const std::size_t end : ends) {
    s.receive(input.substr(start, end - start));
    start = end;
    for (;;) {
      const Step step = s.advance();
      t.output += step.output;
      if (step.next == Next::store) {
        t.stored.push_back(s.content());
        t.envelopes.push_back(s.envelope());
        s.stored(true);
        continue;
      }
      EXPECT_NE(step.next, Next::start_tls);
      if (step.next == Next::close) t.closed = true;
      break;
    }
    if (t.closed) break;
  }
  return t;
}

void expect_same(const Transcript& a, const Transcript& b, const std::string& where) {
  ASSERT_EQ(a.output, b.output) << where;
  ASSERT_EQ(a.stored, b.stored) << where;
  ASSERT_EQ(a.closed, b.closed) << where;
  ASSERT_EQ(a.envelopes.size(), b.envelopes.size()) << where;
  for (std::size_t i = 0; i < a.envelopes.size(); ++i) {
    ASSERT_EQ(a.envelopes[i].sender, b.envelopes[i].sender) << where;
    ASSERT_EQ(a.envelopes[i].recipients, b.envelopes[i].recipients) << where;
    ASSERT_EQ(a.envelopes[i].id, b.envelopes[i].id) << where;
  }
}

// Every two-piece split, every three-piece split (when short enough), and byte by byte.
void grind_session(std::string_view input, const Transcript& expected,
                   SessionSettings settings = make_settings(), std::size_t triple_limit = 200) {
  expect_same(run_split(input, {}, settings), expected, "one shot");
  for (std::size_t i = 0; i <= input.size(); ++i) {
    expect_same(run_split(input, {i}, settings), expected, "split at " + std::to_string(i));
    if (input.size() <= triple_limit)
      for (std::size_t j = i; j <= input.size(); ++j)
        expect_same(run_split(input, {i, j}, settings), expected,
                    "split at " + std::to_string(i) + "," + std::to_string(j));
  }
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < input.size(); ++i) every.push_back(i);
  expect_same(run_split(input, every, settings), expected, "byte by byte");
}

TEST(SessionGrind, PipelinedDataSessionAtEveryOffset) {
  const std::string clean =
      "EHLO client.example\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<c@example.net>\r\n"
      "DATA\r\nSubject: hi\r\n\r\n..dot\r\n\r\nend.\r\n.\r\nQUIT\r\n";
  Transcript expected;
  expected.output = ehlo_reply() +
                    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                    "250 2.0.0 Ok: queued as Q0000001\r\n221 2.0.0 Bye\r\n";
  expected.stored = {header("client.example", "ESMTP", "Q0000001", "c@example.net") +
                     "Subject: hi\r\n\r\n.dot\r\n\r\nend.\r\n"};
  queue::Envelope e;
  e.id = "Q0000001";
  e.sender = "a@example.org";
  e.recipients = {"c@example.net"};
  expected.envelopes = {e};
  expected.closed = true;
  grind_session(clean, expected);
}

TEST(SessionGrind, TwoMessagesDataThenBdatAtEveryOffset) {
  const std::string input =
      "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n.\r\n"
      "MAIL FROM:<>\r\nRCPT TO:<g@h>\r\nBDAT 7\r\nab\r\nc\r\nBDAT 0 LAST\r\nNOOP\r\n";
  Transcript expected;
  expected.output = ehlo_reply() +
                    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                    "250 2.0.0 Ok: queued as Q0000001\r\n"
                    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 7 octets received\r\n"
                    "250 2.0.0 Ok: queued as Q0000002\r\n250 2.0.0 Ok\r\n";
  expected.stored = {header("c", "ESMTP", "Q0000001", ""),
                     header("c", "ESMTP", "Q0000002", "g@h") + "ab\r\nc\r\n"};
  queue::Envelope e1, e2;
  e1.id = "Q0000001";
  e1.sender = "a@b";
  e1.recipients = {"c@d", "e@f"};
  e2.id = "Q0000002";
  e2.recipients = {"g@h"};
  expected.envelopes = {e1, e2};
  grind_session(input, expected, make_settings(), 0);
}

TEST(SessionGrind, BdatWithoutMailAtEveryOffset) {
  const std::string input = "EHLO c\r\nBDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n";
  Transcript expected;
  expected.output = ehlo_reply() + "503 5.5.1 Need MAIL command first\r\n250 2.0.0 Ok\r\n";
  grind_session(input, expected);
}

TEST(SessionGrind, ErrorsAndLimitsAtEveryOffset) {
  const std::string input = "EHLO c\r\nFOO\r\nMAIL FROM:<a@b> X=1\r\nNO\0OP\r\nNOOP\r\nNOOP\n\r\nNOOP\r\n"s;
  Transcript expected;
  // The bare LF ends the session: nothing after it is answered.
  expected.output = ehlo_reply() +
                    "500 5.5.2 Command unrecognized\r\n"
                    "555 5.5.4 Unsupported parameter X\r\n"
                    "500 5.5.2 Invalid character in command\r\n"
                    "250 2.0.0 Ok\r\n"
                    "500 5.5.2 Bare CR or LF in command line not allowed\r\n";
  expected.closed = true;
  grind_session(input, expected);
}

TEST(SessionGrind, LineTooLongAtEveryOffset) {
  config::Limits limits;
  limits.max_command_line = 16;
  // "NOOP " + 9 x's + CRLF is 16 octets (accepted); the VRFY line is 17 (refused).
  const std::string input = "NOOP xxxxxxxxx\r\nVRFY xxxxxxxxxx\r\nNOOP\r\n";
  Transcript expected;
  expected.output = "250 2.0.0 Ok\r\n500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n";
  grind_session(input, expected, make_settings(TlsMode::none, limits));
}

// --- BDAT --------------------------------------------------------------------------------------

TEST(SessionBdat, ChunksThenLast) {
  Harness h;
  h.start_transaction();
  EXPECT_EQ(h.feed("BDAT 5\r\nhello"), "250 2.0.0 5 octets received\r\n");
  EXPECT_EQ(h.feed("BDAT 8 LAST\r\n world\r\n"), "250 2.0.0 Ok: queued as Q0000001\r\n");
  ASSERT_EQ(h.contents().size(), 1u);
  EXPECT_EQ(h.contents()[0],
            header("client.example", "ESMTP", "Q0000001", "c@example.net") + "hello world\r\n");
  EXPECT_EQ(h.envelopes()[0].sender, "a@example.org");
}

TEST(SessionBdat, ZeroLastEndsTheMessage) {
  Harness h;
  h.start_transaction();
  EXPECT_EQ(h.feed("BDAT 3\r\nab\r"), "250 2.0.0 3 octets received\r\n");
  EXPECT_EQ(h.feed("BDAT 1\r\n\n"), "250 2.0.0 1 octets received\r\n");
  EXPECT_EQ(h.feed("bdat 0 last\r\n"), "250 2.0.0 Ok: queued as Q0000001\r\n");
  EXPECT_EQ(h.contents()[0], header("client.example", "ESMTP", "Q0000001", "c@example.net") + "ab\r\n");
}

TEST(SessionBdat, OnlyZeroLast) {
  Harness h;
  h.start_transaction();
  EXPECT_EQ(h.feed("BDAT 0 LAST\r\n"), "250 2.0.0 Ok: queued as Q0000001\r\n");
  EXPECT_EQ(h.contents()[0], header("client.example", "ESMTP", "Q0000001", "c@example.net"));
}

TEST(SessionBdat, ChunkSplitAcrossReceives) {
  Harness h;
  h.start_transaction();
  EXPECT_EQ(h.feed("BDAT 1"), "");
  EXPECT_EQ(h.feed("0 LAST\r\nhi "), "");
  EXPECT_EQ(h.session().waiting_for(), Wait::data);
  EXPECT_EQ(h.feed("ther"), "");
  EXPECT_EQ(h.feed("e\r\nQUIT\r\n"), "250 2.0.0 Ok: queued as Q0000001\r\n221 2.0.0 Bye\r\n");
  EXPECT_EQ(h.contents()[0], header("client.example", "ESMTP", "Q0000001", "c@example.net") + "hi there\r\n");
}

TEST(SessionBdat, ChunkBytesAreNeverCommands) {
  Harness h;
  h.start_transaction();
  EXPECT_EQ(h.feed("BDAT 12 LAST\r\nQUIT\r\nRSET\r\n"), "250 2.0.0 Ok: queued as Q0000001\r\n");
  EXPECT_EQ(h.last(), Next::read);
  EXPECT_EQ(h.contents()[0],
            header("client.example", "ESMTP", "Q0000001", "c@example.net") + "QUIT\r\nRSET\r\n");
}

TEST(SessionBdat, WithoutMailChunkConsumedThen503) {
  Harness h;
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("BDAT 6\r\nQUIT\r\n"), "503 5.5.1 Need MAIL command first\r\n");
  EXPECT_EQ(h.last(), Next::read);
  EXPECT_EQ(h.feed("NOOP\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_FALSE(h.ever(Next::store));
}

TEST(SessionBdat, WithoutMailChunkSplit) {
  Harness h;
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("BDAT 12\r\nQUIT\r\n"), "");
  EXPECT_EQ(h.session().waiting_for(), Wait::data);
  EXPECT_EQ(h.feed("QUIT\r\nNOOP\r\n"), "503 5.5.1 Need MAIL command first\r\n250 2.0.0 Ok\r\n");
}

TEST(SessionBdat, BeforeHeloAndWithoutRecipients) {
  Harness h;
  EXPECT_EQ(h.feed("BDAT 4\r\nQUIT"), "503 5.5.1 Send HELO/EHLO first\r\n");
  h.feed("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n");
  EXPECT_EQ(h.feed("BDAT 4 LAST\r\nQUIT"), "503 5.5.1 Need RCPT command first\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\nBDAT 2 LAST\r\nok"),
            "250 2.1.5 Ok\r\n250 2.0.0 Ok: queued as Q0000001\r\n");
}

TEST(SessionBdat, BadSyntaxIs501AndClose) {
  for (const std::string& line :
       {"BDAT"s, "BDAT "s, "BDAT x"s, "BDAT -1"s, "BDAT 5 LASTX"s, "BDAT 5 LAST extra"s, "BDAT 5  LAST"s,
        "BDAT 1e3"s, "BDAT 123456789012345678901"s}) {
    SCOPED_TRACE(line);
    Harness h;
    h.start_transaction();
    EXPECT_EQ(h.feed(line + "\r\nNOOP\r\n"), "501 5.5.4 Syntax: BDAT size [LAST]\r\n");
    EXPECT_EQ(h.last(), Next::close);
    EXPECT_EQ(h.session().end_reason(), "bad BDAT syntax");
  }
}

TEST(SessionBdat, DataAfterBdat) {
  Harness h;
  h.start_transaction();
  EXPECT_EQ(h.feed("BDAT 3\r\nabc"), "250 2.0.0 3 octets received\r\n");
  EXPECT_EQ(h.feed("DATA\r\n"), "503 5.5.1 DATA not allowed after BDAT\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<x@example.org>\r\n"), "503 5.5.1 Nested MAIL command\r\n");
  EXPECT_EQ(h.feed("BDAT 2 LAST\r\n\r\n"), "250 2.0.0 Ok: queued as Q0000001\r\n");
  EXPECT_EQ(h.contents()[0], header("client.example", "ESMTP", "Q0000001", "c@example.net") + "abc\r\n");
}

TEST(SessionBdat, RsetAbandonsChunkedMessage) {
  Harness h;
  h.start_transaction();
  EXPECT_EQ(h.feed("BDAT 3\r\nabc"), "250 2.0.0 3 octets received\r\n");
  EXPECT_EQ(h.feed("RSET\r\nBDAT 1 LAST\r\nx"), "250 2.0.0 Ok\r\n503 5.5.1 Need MAIL command first\r\n");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\nnew\r\n.\r\n"),
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
            "250 2.0.0 Ok: queued as Q0000002\r\n");
  EXPECT_EQ(h.contents()[0], header("client.example", "ESMTP", "Q0000002", "c@example.net") + "new\r\n");
}

TEST(SessionBdat, BareLfIsNeverStored) {
  for (const std::string& chunks : {"BDAT 4 LAST\r\na\nb\n"s, "BDAT 2\r\na\rBDAT 1 LAST\r\nb"s,
                                    "BDAT 2\r\na\nBDAT 0 LAST\r\n"s, "BDAT 2 LAST\r\na\r"s}) {
    SCOPED_TRACE(testing::PrintToString(chunks));
    Harness h;
    h.start_transaction();
    h.feed(chunks);
    EXPECT_FALSE(h.ever(Next::store));
  }
}

TEST(SessionBdat, BareLfIsAnswered550) {
  Harness h;
  h.start_transaction();
  const std::string out = h.feed("BDAT 4 LAST\r\na\nb\nNOOP\r\n");
  EXPECT_EQ(out, "550 5.5.2 Message contains bare CR or LF; not accepted\r\n250 2.0.0 Ok\r\n");
}

TEST(SessionBdat, BareLfInNonLastChunkFailsTheTransaction) {
  Harness h;
  h.start_transaction();
  const std::string out = h.feed("BDAT 2\r\na\nBDAT 1 LAST\r\nb");
  EXPECT_FALSE(h.ever(Next::store));
  EXPECT_EQ(out,
            "550 5.5.2 Message contains bare CR or LF; not accepted\r\n"
            "503 5.5.1 Need MAIL command first\r\n");
}

TEST(SessionBdat, SizeAtLimitAccepted) {
  Harness h = with_limits({.max_message_size = 10});
  h.settings_size_ = 10;
  h.start_transaction();
  EXPECT_EQ(h.feed("BDAT 6\r\n123456BDAT 4 LAST\r\n7890"),
            "250 2.0.0 6 octets received\r\n250 2.0.0 Ok: queued as Q0000001\r\n");
  EXPECT_EQ(h.contents()[0], header("client.example", "ESMTP", "Q0000001", "c@example.net") + "1234567890");
}

TEST(SessionBdat, SizeOneByteOverIsNeverStored) {
  Harness h = with_limits({.max_message_size = 10});
  h.settings_size_ = 10;
  h.start_transaction();
  h.feed("BDAT 6\r\n123456BDAT 5 LAST\r\n7890aNOOP\r\n");
  EXPECT_FALSE(h.ever(Next::store));
}

TEST(SessionBdat, SizeOneByteOverIsAnswered552) {
  Harness h = with_limits({.max_message_size = 10});
  h.settings_size_ = 10;
  h.start_transaction();
  const std::string out = h.feed("BDAT 6\r\n123456BDAT 5 LAST\r\n7890aNOOP\r\n");
  EXPECT_EQ(out,
            "250 2.0.0 6 octets received\r\n552 5.3.4 Message size exceeds fixed limit\r\n"
            "250 2.0.0 Ok\r\n");
}

// --- STARTTLS -------------------------------------------------------------------------------------

TEST(SessionStartTls, Reply220ThenStartTls) {
  Harness h(make_settings(TlsMode::may));
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
  EXPECT_EQ(h.last(), Next::start_tls);
  EXPECT_FALSE(h.session().tls_active());
  h.session().tls_established(test_tls());
  EXPECT_TRUE(h.session().tls_active());
  ASSERT_TRUE(h.session().tls().has_value());
  EXPECT_EQ(h.session().tls()->cipher, "TLS_AES_256_GCM_SHA384");
  EXPECT_EQ(h.pump(), "");
  EXPECT_EQ(h.last(), Next::read);
}

TEST(SessionStartTls, BufferedCommandsAreDiscarded) {
  Harness h(make_settings(TlsMode::may));
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("STARTTLS\r\nRSET\r\n"), "220 2.0.0 Ready to start TLS\r\n");
  EXPECT_EQ(h.last(), Next::start_tls);
  h.session().tls_established(test_tls());
  EXPECT_EQ(h.pump(), "") << "the RSET sent in cleartext is never answered";
  EXPECT_EQ(h.last(), Next::read);
  EXPECT_EQ(h.feed("NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

TEST(SessionStartTls, BufferedTransactionIsDiscarded) {
  Harness h(make_settings(TlsMode::may));
  EXPECT_EQ(h.feed("EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<v@example.net>\r\n"),
            ehlo_reply(36700160, true) + "220 2.0.0 Ready to start TLS\r\n");
  h.session().tls_established(test_tls());
  EXPECT_EQ(h.pump(), "");
  EXPECT_EQ(h.feed("EHLO c\r\nDATA\r\n"), ehlo_reply() + "503 5.5.1 Need MAIL command first\r\n");
}

TEST(SessionStartTls, CommandsBeforeStartTlsInTheBatchAreAnswered) {
  Harness h(make_settings(TlsMode::may));
  EXPECT_EQ(h.feed("NOOP\r\nSTARTTLS\r\nNOOP\r\n"), "250 2.0.0 Ok\r\n220 2.0.0 Ready to start TLS\r\n");
  EXPECT_EQ(h.last(), Next::start_tls);
  h.session().tls_established(test_tls());
  EXPECT_EQ(h.pump(), "");
}

TEST(SessionStartTls, StateResetAfterTls) {
  Harness h(make_settings(TlsMode::may));
  h.feed("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n");
  EXPECT_EQ(h.feed("STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
  h.session().tls_established(test_tls());
  EXPECT_EQ(h.session().helo(), "");
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\n"), "503 5.5.1 Send HELO/EHLO first\r\n");
  EXPECT_EQ(h.feed("EHLO client.example\r\n"), ehlo_reply());
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "503 5.5.1 Need MAIL command first\r\n");
  EXPECT_EQ(h.feed("STARTTLS\r\n"), "554 5.5.1 TLS already active\r\n");
  EXPECT_EQ(h.last(), Next::read);
}

TEST(SessionStartTls, MessageOverTls) {
  Harness h(make_settings(TlsMode::may));
  h.feed("EHLO client.example\r\nSTARTTLS\r\n");
  h.session().tls_established(test_tls());
  EXPECT_EQ(h.feed("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\n"
                   "DATA\r\nx\r\n.\r\n"),
            ehlo_reply() +
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                "250 2.0.0 Ok: queued as Q0000001\r\n");
  EXPECT_EQ(h.contents()[0], header("client.example", "ESMTPS", "Q0000001", "c@example.net", true) + "x\r\n");
  EXPECT_EQ(h.envelopes()[0].tls, "TLSv1.3 TLS_AES_256_GCM_SHA384");
}

TEST(SessionStartTls, Utf8MessageOverTls) {
  Harness h(make_settings(TlsMode::may));
  h.feed("EHLO client.example\r\nSTARTTLS\r\n");
  h.session().tls_established(test_tls());
  h.feed(
      "EHLO client.example\r\nMAIL FROM:<a@example.org> SMTPUTF8\r\nRCPT TO:<c@example.net>\r\n"
      "RCPT TO:<d@example.net>\r\nBDAT 3 LAST\r\nx\r\n");
  ASSERT_EQ(h.contents().size(), 1u);
  EXPECT_EQ(h.contents()[0], header("client.example", "UTF8SMTPS", "Q0000001", "", true) + "x\r\n");
}

TEST(SessionStartTls, Syntax) {
  Harness h(make_settings(TlsMode::may));
  EXPECT_EQ(h.feed("STARTTLS now\r\n"), "501 5.5.4 Syntax: STARTTLS\r\n");
  EXPECT_EQ(h.last(), Next::read);
}

TEST(SessionStartTls, NotAvailableWithoutTls) {
  Harness h(make_settings(TlsMode::none));
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.feed("STARTTLS\r\nNOOP\r\n"), "502 5.5.1 STARTTLS not available\r\n250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.last(), Next::read);
}

TEST(SessionStartTls, EncryptRequiresTlsForMailCommands) {
  Harness h(make_settings(TlsMode::encrypt));
  EXPECT_EQ(h.feed("EHLO client.example\r\n"), ehlo_reply(36700160, true));
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\n"), "530 5.7.0 Must issue a STARTTLS command first\r\n");
  EXPECT_EQ(h.feed("RCPT TO:<c@example.net>\r\n"), "530 5.7.0 Must issue a STARTTLS command first\r\n");
  EXPECT_EQ(h.feed("DATA\r\n"), "530 5.7.0 Must issue a STARTTLS command first\r\n");
  EXPECT_EQ(h.feed("BDAT 4\r\nQUIT"), "530 5.7.0 Must issue a STARTTLS command first\r\n");
  EXPECT_EQ(h.feed("BDAT 4 LAST\r\nQUIT"), "530 5.7.0 Must issue a STARTTLS command first\r\n");
  EXPECT_EQ(h.feed("NOOP\r\nRSET\r\nVRFY x\r\n"),
            "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
  EXPECT_EQ(h.feed("STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
  h.session().tls_established(test_tls());
  EXPECT_EQ(h.feed("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n"),
            ehlo_reply() + "250 2.1.0 Ok\r\n");
  EXPECT_FALSE(h.ever(Next::store));
}

TEST(SessionStartTls, EncryptBeforeEhloAsksForEhloFirst) {
  Harness h(make_settings(TlsMode::encrypt));
  EXPECT_EQ(h.feed("MAIL FROM:<a@example.org>\r\n"), "503 5.5.1 Send HELO/EHLO first\r\n");
}

// --- Command line limits and hostile bytes ------------------------------------------------------

TEST(SessionLineLength, AtLimitAccepted) {
  Harness h;
  const std::size_t limit = config::Limits{}.max_command_line;
  const std::string line = "NOOP " + std::string(limit - 7, 'x') + "\r\n";
  ASSERT_EQ(line.size(), limit);
  EXPECT_EQ(h.feed(line), "250 2.0.0 Ok\r\n");
}

TEST(SessionLineLength, AtLimitAcceptedWhenSplit) {
  Harness h;
  const std::size_t limit = config::Limits{}.max_command_line;
  const std::string line = "NOOP " + std::string(limit - 7, 'x') + "\r\n";
  EXPECT_EQ(h.feed(line.substr(0, limit - 1)), "");
  EXPECT_EQ(h.feed(line.substr(limit - 1)), "250 2.0.0 Ok\r\n");
}

TEST(SessionLineLength, OnePastRefusedRestOfLineDiscarded) {
  Harness h;
  const std::size_t limit = config::Limits{}.max_command_line;
  // The first `limit` octets of a longer line arrive, then the rest, which
  // looks like a command but is still the same line.
  EXPECT_EQ(h.feed("NOOP " + std::string(limit - 5, 'x')), "500 5.5.2 Line too long\r\n");
  EXPECT_EQ(h.last(), Next::read);
  EXPECT_EQ(h.feed("xxxx"), "");
  EXPECT_EQ(h.feed("\r\nNOOP\r\n"), "250 2.0.0 Ok\r\n");
}

TEST(SessionLineLength, TailThatLooksLikeACommandIsNotExecuted) {
  Harness h;
  const std::size_t limit = config::Limits{}.max_command_line;
  EXPECT_EQ(h.feed(std::string(limit, 'x')), "500 5.5.2 Line too long\r\n");
  EXPECT_EQ(h.feed("QUIT\r\nNOOP\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.last(), Next::read);
}

TEST(SessionLineLength, OnePastRefusedThenNextCommandAnswered) {
  Harness h;
  const std::size_t limit = config::Limits{}.max_command_line;
  const std::string line = "NOOP " + std::string(limit - 6, 'x') + "\r\n";
  ASSERT_EQ(line.size(), limit + 1);
  EXPECT_EQ(h.feed(line + "NOOP\r\n"), "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
}

TEST(SessionLineLength, NextLineAfterOverlongLineIsAnswered) {
  Harness h;
  const std::size_t limit = config::Limits{}.max_command_line;
  const std::string line = "NOOP " + std::string(limit - 6, 'x') + "\r\n";
  EXPECT_EQ(h.feed(line), "500 5.5.2 Line too long\r\n");
  EXPECT_EQ(h.feed("NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

TEST(SessionHostileBytes, BareLfAndBareCrInCommands) {
  // Each variant is refused and ends the session: where the client meant the
  // command to end is unknowable, so nothing after it may run.
  for (const std::string input : {"NOOP\n", "\n", "NO\rOP\r\n", "NOOP\r\r\n", "NOOP\rQUIT\r\n",
                                  "NOOP\nMAIL FROM:<a@b.c>\r\n"}) {
    Harness h;
    EXPECT_EQ(h.feed(input + "NOOP\r\n"), "500 5.5.2 Bare CR or LF in command line not allowed\r\n")
        << input;
    EXPECT_EQ(h.last(), Next::close) << input;
    EXPECT_EQ(h.session().end_reason(), "bare CR or LF in command") << input;
  }
}

TEST(SessionHostileBytes, NulAndControls) {
  Harness h;
  EXPECT_EQ(h.feed("NO\0OP\r\n"s), "500 5.5.2 Invalid character in command\r\n");
  EXPECT_EQ(h.feed("NOOP \x01\r\n"), "500 5.5.2 Invalid character in command\r\n");
  EXPECT_EQ(h.feed("NOOP \x1b[1m\r\n"), "500 5.5.2 Invalid character in command\r\n");
  EXPECT_EQ(h.feed("NOOP \x7f\r\n"), "500 5.5.2 Invalid character in command\r\n");
  EXPECT_EQ(h.feed("EHLO a\0b\r\n"s), "500 5.5.2 Invalid character in command\r\n");
  EXPECT_EQ(h.session().helo(), "");
}

TEST(SessionHostileBytes, InvalidUtf8InCommands) {
  Harness h;
  EXPECT_EQ(h.feed("NOOP \xff\r\n"), "500 5.5.2 Invalid character in command\r\n");
  EXPECT_EQ(h.feed("EHLO b\xC3\r\n"), "500 5.5.2 Invalid character in command\r\n");
  EXPECT_EQ(h.feed("NOOP \xC0\xAF\r\n"), "500 5.5.2 Invalid character in command\r\n");
  EXPECT_EQ(h.feed("NOOP \xED\xA0\x80\r\n"), "500 5.5.2 Invalid character in command\r\n");
  EXPECT_EQ(h.feed("NOOP \xC3\xA9\r\n"), "250 2.0.0 Ok\r\n");
}

TEST(SessionHostileBytes, TlsClientHelloOnCleartext) {
  const std::string hello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\nNOOP\r\n", 19);
  {
    Harness h;
    EXPECT_EQ(h.feed(hello), "500 5.5.2 TLS handshake on a cleartext SMTP connection; use STARTTLS\r\n");
    EXPECT_EQ(h.last(), Next::close);
    EXPECT_EQ(h.session().end_reason(), "TLS handshake in cleartext");
  }
  {
    Harness h;  // record header split across reads
    EXPECT_EQ(h.feed("\x16"), "");
    EXPECT_EQ(h.feed("\x03"), "");
    EXPECT_EQ(h.feed(hello.substr(2)),
              "500 5.5.2 TLS handshake on a cleartext SMTP connection; use STARTTLS\r\n");
    EXPECT_EQ(h.last(), Next::close);
  }
  {
    Harness h(make_settings(TlsMode::may));  // after EHLO, and with TLS 1.3 record version
    EXPECT_EQ(h.feed("EHLO c\r\n\x16\x03\x03\x00"s),
              ehlo_reply(36700160, true) +
                  "500 5.5.2 TLS handshake on a cleartext SMTP connection; use STARTTLS\r\n");
    EXPECT_EQ(h.last(), Next::close);
  }
}

TEST(SessionHostileBytes, RecordLikeBytesInsideTlsAreJustABadLine) {
  Harness h(make_settings(TlsMode::implicit));
  h.session().tls_established(test_tls());
  EXPECT_EQ(h.feed("\x16\x03\x01\r\n"), "500 5.5.2 Invalid character in command\r\n");
  EXPECT_EQ(h.last(), Next::read);
}

// --- Error budget, timeouts, shutdown -----------------------------------------------------------

TEST(SessionErrors, MaxErrorsCloses) {
  Harness h = with_limits({.max_errors = 3});
  EXPECT_EQ(h.feed("FOO\r\nMAIL FROM:<a@b>\r\nBAR\r\nNOOP\r\n"),
            "500 5.5.2 Command unrecognized\r\n"
            "503 5.5.1 Send HELO/EHLO first\r\n"
            "500 5.5.2 Command unrecognized\r\n"
            "421 4.7.0 mx.example.test Too many errors, closing connection\r\n");
  EXPECT_EQ(h.last(), Next::close);
  EXPECT_EQ(h.session().end_reason(), "too many errors");
}

TEST(SessionErrors, DefaultBudgetIsTen) {
  Harness h;
  std::string expected;
  for (int i = 0; i < 9; ++i) {
    EXPECT_EQ(h.feed("FOO\r\n"), "500 5.5.2 Command unrecognized\r\n");
    EXPECT_EQ(h.last(), Next::read);
  }
  EXPECT_EQ(h.feed("FOO\r\n"),
            "500 5.5.2 Command unrecognized\r\n"
            "421 4.7.0 mx.example.test Too many errors, closing connection\r\n");
  EXPECT_EQ(h.last(), Next::close);
}

TEST(SessionErrors, SuccessfulCommandsDoNotReset) {
  Harness h = with_limits({.max_errors = 2});
  EXPECT_EQ(h.feed("FOO\r\nNOOP\r\nNOOP\r\nFOO\r\n"),
            "500 5.5.2 Command unrecognized\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"
            "500 5.5.2 Command unrecognized\r\n"
            "421 4.7.0 mx.example.test Too many errors, closing connection\r\n");
}

TEST(SessionErrors, LineTooLongCountsAndCanClose) {
  config::Limits limits;
  limits.max_errors = 1;
  limits.max_command_line = 10;
  Harness h = with_limits(limits);
  EXPECT_EQ(h.feed("xxxxxxxxxxxx"),
            "500 5.5.2 Line too long\r\n"
            "421 4.7.0 mx.example.test Too many errors, closing connection\r\n");
  EXPECT_EQ(h.last(), Next::close);
}

TEST(SessionErrors, BdatRefusalCountsAndCanClose) {
  Harness h = with_limits({.max_errors = 1});
  EXPECT_EQ(h.feed("BDAT 3\r\nabcNOOP\r\n"),
            "503 5.5.1 Send HELO/EHLO first\r\n"
            "421 4.7.0 mx.example.test Too many errors, closing connection\r\n");
  EXPECT_EQ(h.last(), Next::close);
}

TEST(SessionEvents, TimedOut) {
  Harness h;
  h.feed("EHLO client.example\r\n");
  EXPECT_EQ(h.session().timed_out(), "421 4.4.2 mx.example.test Timeout, closing connection\r\n");
  EXPECT_EQ(h.session().end_reason(), "timeout");
  EXPECT_EQ(h.feed("NOOP\r\n"), "");
  EXPECT_EQ(h.last(), Next::close);
}

TEST(SessionEvents, TimedOutDuringData) {
  Harness h;
  h.start_transaction();
  h.feed("DATA\r\npartial");
  EXPECT_EQ(h.session().waiting_for(), Wait::data);
  EXPECT_EQ(h.session().timed_out(), "421 4.4.2 mx.example.test Timeout, closing connection\r\n");
  EXPECT_EQ(h.pump(), "");
  EXPECT_EQ(h.last(), Next::close);
  EXPECT_FALSE(h.ever(Next::store));
}

TEST(SessionEvents, ShuttingDown) {
  Harness h;
  EXPECT_EQ(h.session().shutting_down(), "421 4.3.2 mx.example.test Service shutting down\r\n");
  EXPECT_EQ(h.session().end_reason(), "shutdown");
  EXPECT_EQ(h.pump(), "");
  EXPECT_EQ(h.last(), Next::close);
}

TEST(SessionEvents, FirstEndReasonWins) {
  Harness h;
  h.feed("QUIT\r\n");
  EXPECT_EQ(h.session().timed_out(), "421 4.4.2 mx.example.test Timeout, closing connection\r\n");
  EXPECT_EQ(h.session().end_reason(), "quit");
}

TEST(SessionEvents, Disconnected) {
  {
    Harness h;
    h.session().disconnected();
    EXPECT_EQ(h.session().end_reason(), "disconnect");
  }
  {
    Harness h;
    h.start_transaction();
    h.session().disconnected();
    EXPECT_EQ(h.session().end_reason(), "disconnect in transaction");
    EXPECT_EQ(h.pump(), "");
    EXPECT_EQ(h.last(), Next::close);
  }
}

}  // namespace
}  // namespace mxgate::smtp

// --- The content filter's outcomes (the shell scans between Next::store and the reply) ---

namespace mxgate::smtp {
namespace {

TEST(SessionFilterOutcome, HeaderFieldsGoBelowOurReceivedField) {
  FixedEnvironment env;
  Session s(make_settings(), env, "192.0.2.7");
  s.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
            "Subject: hi\r\n\r\nbody\r\n.\r\n");
  Step step = s.advance();
  ASSERT_EQ(step.next, Next::store);
  const std::string received = s.content().substr(0, s.content().find("Subject: hi"));
  s.add_header_fields("X-mxgate-Verdict: accept\r\n");
  s.add_header_fields("X-Second: 2\r\n");
  EXPECT_EQ(s.content(), received + "X-mxgate-Verdict: accept\r\nX-Second: 2\r\nSubject: hi\r\n\r\nbody\r\n");
  s.stored(true);
  EXPECT_EQ(s.advance().output, "250 2.0.0 Ok: queued as Q0000001\r\n");
}

TEST(SessionFilterOutcome, ARefusalEndsTheTransactionButNotTheSession) {
  FixedEnvironment env;
  Session s(make_settings(), env, "192.0.2.7");
  // Pipelined: the next transaction's commands wait behind the refusal.
  s.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
            "bad\r\n.\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n");
  Step step = s.advance();
  ASSERT_EQ(step.next, Next::store);
  s.refused(Reply{550, "5.7.1", "Message refused as malware or a blocked attachment type"});
  EXPECT_FALSE(s.in_transaction());
  EXPECT_EQ(s.content(), "");
  step = s.advance();
  EXPECT_EQ(step.output,
            "550 5.7.1 Message refused as malware or a blocked attachment type\r\n"
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
  EXPECT_EQ(step.next, Next::read);
  EXPECT_EQ(s.messages_accepted(), 0u);
  // A refusal is not a protocol error: many in a row do not close the session.
  for (int i = 0; i < 20; ++i) {
    s.receive("x\r\n.\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n");
    ASSERT_EQ(s.advance().next, Next::store);
    s.refused(Reply{451, "4.7.1", "Message could not be scanned; try again later"});
    step = s.advance();
    EXPECT_EQ(step.output.substr(0, 50), "451 4.7.1 Message could not be scanned; try again ");
    ASSERT_EQ(step.next, Next::read);
  }
}

}  // namespace
}  // namespace mxgate::smtp

namespace mxgate::smtp {
namespace {

TEST(SessionFilterOutcome, EraseContentRemovesOnlyValidRangesBelowOurReceived) {
  FixedEnvironment env;
  Session s(make_settings(), env, "192.0.2.7");
  s.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
            "A: 1\r\nB: 2\r\nC: 3\r\n\r\nbody\r\n.\r\n");
  ASSERT_EQ(s.advance().next, Next::store);
  const std::string content = s.content();
  const std::size_t a = content.find("A: 1"), b = content.find("B: 2"), c = content.find("C: 3");
  s.erase_content({{0, 5},                       // our Received field: ignored
                   {a, b},                       // "A: 1\r\n"
                   {c, c + 6},                   // "C: 3\r\n"
                   {content.size(), content.size() + 9}});  // past the end: ignored
  EXPECT_EQ(s.content(), content.substr(0, a) + "B: 2\r\n\r\nbody\r\n");
}

}  // namespace
}  // namespace mxgate::smtp

namespace mxgate::smtp {
namespace {

// An environment that admits n messages, then refuses.
class RationedEnvironment : public FixedEnvironment {
 public:
  explicit RationedEnvironment(int n) : left_(n) {}
  bool admit_message(std::string_view client_ip) override {
    asked_.push_back(std::string(client_ip));
    return left_-- > 0;
  }
  std::vector<std::string> asked_;

 private:
  int left_;
};

TEST(SessionMessageRate, OverTheRateMailIsTemporarilyRefused) {
  RationedEnvironment env(1);
  RelayPolicy policy = RelayPolicy::from_config(config::Config{}).value();  // relay: loopback only
  SessionSettings settings = make_settings();
  settings.relay = &policy;
  Session s(settings, env, "192.0.2.7");
  s.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRSET\r\nMAIL FROM:<a@example.org>\r\n"
            "MAIL FROM:<bad\r\n");
  EXPECT_EQ(s.advance().output, ehlo_reply() +
                                    "250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n"
                                    "450 4.7.1 Error: too much mail from 192.0.2.7\r\n"
                                    "501 5.1.7 Bad sender address syntax\r\n");
  EXPECT_EQ(env.asked_, (std::vector<std::string>{"192.0.2.7", "192.0.2.7"}));  // bad syntax is not counted
  // Relay clients are exempt and never asked.
  RationedEnvironment none(0);
  Session local(settings, none, "127.0.0.1");
  local.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n");
  EXPECT_EQ(local.advance().output, ehlo_reply() + "250 2.1.0 Ok\r\n");
  EXPECT_TRUE(none.asked_.empty());
}

}  // namespace
}  // namespace mxgate::smtp

namespace mxgate::smtp {
namespace {

TEST(SessionFilterOutcome, ReplaceContentKeepsOurReceivedFieldWhereverItMoved) {
  FixedEnvironment env;
  Session s(make_settings(), env, "192.0.2.7");
  s.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
            "Subject: hi\r\n\r\nbody\r\n.\r\n");
  ASSERT_EQ(s.advance().next, Next::store);
  const std::string original = s.content();
  const std::string received = original.substr(0, original.find("Subject: hi"));
  // A milter inserted a field at the top: accepted, and later fields still go below our Received.
  s.replace_content("DKIM-Signature: x\r\n" + original);
  s.add_header_fields("X-Verdict: ok\r\n");
  EXPECT_EQ(s.content(), "DKIM-Signature: x\r\n" + received + "X-Verdict: ok\r\nSubject: hi\r\n\r\nbody\r\n");
  // An edit that lost our Received field is ignored.
  const std::string before = s.content();
  s.replace_content("Subject: hi\r\n\r\nbody\r\n");
  EXPECT_EQ(s.content(), before);
}

}  // namespace
}  // namespace mxgate::smtp

namespace mxgate::smtp {
namespace {

// RCPT-stage checks ([filter] reject_dnsbl_clients, reject_spf_fail): the
// session stops at each recipient of an outside client until the shell
// answers, in order, even when the client pipelines.
struct CheckedSession {
  explicit CheckedSession(std::string client_ip = "192.0.2.7") {
    config::Config config;
    config.accept_domains = {"example.net"};
    policy = RelayPolicy::from_config(config).value();
    SessionSettings settings = make_settings();
    settings.relay = &policy;
    settings.check_recipients = true;
    session.emplace(settings, env, std::move(client_ip));
  }
  FixedEnvironment env;
  RelayPolicy policy = RelayPolicy::from_config(config::Config{}).value();
  std::optional<Session> session;
};

TEST(SessionRecipientChecks, EachRecipientWaitsForItsCheckInOrder) {
  CheckedSession c;
  Session& s = *c.session;
  s.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
            "RCPT TO:<c@example.net>\r\nDATA\r\n");
  Step step = s.advance();
  EXPECT_EQ(step.output, ehlo_reply() + "250 2.1.0 Ok\r\n");
  ASSERT_EQ(step.next, Next::check_recipient);
  ASSERT_NE(s.recipient_to_check(), nullptr);
  EXPECT_EQ(*s.recipient_to_check(), "b@example.net");
  // Asking again without an answer changes nothing.
  step = s.advance();
  EXPECT_EQ(step.output, "");
  EXPECT_EQ(step.next, Next::check_recipient);
  s.recipient_checked(std::nullopt);
  step = s.advance();
  EXPECT_EQ(step.output, "250 2.1.5 Ok\r\n");
  ASSERT_EQ(step.next, Next::check_recipient);
  EXPECT_EQ(*s.recipient_to_check(), "c@example.net");
  s.recipient_checked(Reply{550, "5.7.23", "SPF validation failed"});
  EXPECT_EQ(s.recipient_to_check(), nullptr);
  step = s.advance();
  // The pipelined DATA ran after the check: one recipient was accepted.
  EXPECT_EQ(step.output, "550 5.7.23 SPF validation failed\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
  s.receive("Subject: x\r\n\r\nbody\r\n.\r\n");
  step = s.advance();
  ASSERT_EQ(step.next, Next::store);
  EXPECT_EQ(s.envelope().recipients, (std::vector<std::string>{"b@example.net"}));
}

TEST(SessionRecipientChecks, EveryRecipientRefusedLeavesNothingForData) {
  CheckedSession c;
  Session& s = *c.session;
  s.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
  ASSERT_EQ(s.advance().next, Next::check_recipient);
  s.recipient_checked(Reply{550, "5.7.1", "Client host [192.0.2.7] blocked using bl.example"});
  const Step step = s.advance();
  EXPECT_EQ(step.output,
            "550 5.7.1 Client host [192.0.2.7] blocked using bl.example\r\n554 5.5.1 No valid recipients\r\n");
  EXPECT_EQ(step.next, Next::read);
}

TEST(SessionRecipientChecks, OnlyRecipientsThatPassedEverythingElseAreChecked) {
  CheckedSession c;
  Session& s = *c.session;
  // Bad syntax and a relay attempt are refused without a check.
  s.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bad\r\nRCPT TO:<x@elsewhere.example>\r\n");
  const Step step = s.advance();
  EXPECT_EQ(step.output, ehlo_reply() +
                             "250 2.1.0 Ok\r\n501 5.1.3 Bad recipient address syntax\r\n"
                             "554 5.7.1 <x@elsewhere.example>: Relay access denied\r\n");
  EXPECT_EQ(step.next, Next::read);
  EXPECT_EQ(s.recipient_to_check(), nullptr);
}

TEST(SessionRecipientChecks, RelayClientsAreNotChecked) {
  CheckedSession c("127.0.0.1");
  Session& s = *c.session;
  s.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@elsewhere.example>\r\n");
  const Step step = s.advance();
  EXPECT_EQ(step.output, ehlo_reply() + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
  EXPECT_EQ(step.next, Next::read);
}

TEST(SessionRecipientChecks, RefusalsCountAsErrors) {
  config::Limits limits;
  limits.max_errors = 2;
  CheckedSession c;
  c.session.reset();
  SessionSettings settings = make_settings(TlsMode::none, limits);
  settings.relay = &c.policy;
  settings.check_recipients = true;
  c.session.emplace(settings, c.env, "192.0.2.7");
  Session& s = *c.session;
  s.receive("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\n");
  const Reply refusal{550, "5.7.1", "Client host [192.0.2.7] blocked using bl.example"};
  ASSERT_EQ(s.advance().next, Next::check_recipient);
  s.recipient_checked(refusal);
  ASSERT_EQ(s.advance().next, Next::check_recipient);
  s.recipient_checked(refusal);
  const Step step = s.advance();
  EXPECT_EQ(step.output, "550 5.7.1 Client host [192.0.2.7] blocked using bl.example\r\n"
                         "421 4.7.0 mx.example.test Too many errors, closing connection\r\n");
  EXPECT_EQ(step.next, Next::close);
}

}  // namespace
}  // namespace mxgate::smtp
