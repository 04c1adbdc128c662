// The SMTP client state machine (src/delivery/smtp_client_session.hpp) fed
// server replies as bytes; every command it writes is asserted exactly.  Also
// EHLO parsing.  DATA framing: tests/unit/data_framer_test.cpp.
#include "delivery/smtp_client_session.hpp"

#include "delivery/data_framer.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>


namespace mxgate::delivery {
namespace {

using Next = SmtpClientSession::Next;
using TlsUse = SmtpClientSession::TlsUse;
using Wait = SmtpClientSession::Wait;

constexpr std::string_view kContent = "Subject: t\r\n\r\n.hidden\r\nbody\r\n";
constexpr std::string_view kFramed = "Subject: t\r\n\r\n..hidden\r\nbody\r\n.\r\n";

const std::string kEhloPlain = "250-mx.example.test\r\n250 ENHANCEDSTATUSCODES\r\n";
const std::string kEhloFull =
    "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 36700160\r\n250-STARTTLS\r\n250-8BITMIME\r\n"
    "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const std::string kEhloTls =
    "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 36700160\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 "
    "CHUNKING\r\n";

ServerReply parse(std::string_view wire) {
  ReplyParser parser;
  EXPECT_EQ(parser.feed(wire), wire.size());
  EXPECT_TRUE(parser.has_reply()) << wire;
  ServerReply r = parser.take();
  EXPECT_FALSE(parser.has_reply()) << "one reply at a time: " << wire;
  EXPECT_FALSE(parser.partial()) << wire;
  return r;
}

SmtpClientSession::Transaction txn(std::vector<std::string> rcpts = {"a@example.test"},
                                   std::string sender = "s@example.org") {
  SmtpClientSession::Transaction t;
  t.sender = std::move(sender);
  t.recipients = std::move(rcpts);
  t.content_size = kContent.size();
  return t;
}

// Drives one session: each call feeds one reply and returns what the client writes.
// What the shell writes for a step: a content step is the framed content.
std::string written(const SmtpClientSession& session, const SmtpClientSession::Step& step) {
  if (step.content) {
    EXPECT_EQ(step.output, "") << "a content step carries no output of its own";
    return frame_data(session.content());
  }
  return step.output;
}

class Dialogue {
 public:
  explicit Dialogue(SmtpClientSession::Transaction t = txn(), TlsUse tls = TlsUse::none,
                    std::string_view content = kContent)
      : session_({"client.example.org", "mx.example.test", tls}, std::move(t), content) {
    step_ = session_.start();
    EXPECT_EQ(step_.output, "");
    EXPECT_EQ(step_.next, Next::read_reply);
    EXPECT_EQ(session_.waiting_for(), Wait::greeting);
  }

  std::string reply(std::string_view wire) {
    EXPECT_EQ(step_.next, Next::read_reply) << "the client was not waiting for a reply: " << wire;
    step_ = session_.on_reply(parse(wire));
    return written(session_, step_);
  }

  // Greeting and EHLO with the given EHLO reply; returns what follows EHLO.
  std::string hello(const std::string& ehlo) {
    EXPECT_EQ(reply("220 mx.example.test ESMTP\r\n"), "EHLO client.example.org\r\n");
    EXPECT_EQ(session_.waiting_for(), Wait::command);
    return reply(ehlo);
  }

  void expect_quit_and_close() {
    EXPECT_EQ(step_.output, "QUIT\r\n");
    EXPECT_EQ(step_.next, Next::read_reply);
    EXPECT_EQ(session_.waiting_for(), Wait::quit);
    EXPECT_TRUE(session_.finished());
    EXPECT_EQ(reply("221 2.0.0 Bye\r\n"), "");
    EXPECT_EQ(step_.next, Next::close);
  }

  SmtpClientSession& session() { return session_; }
  const SmtpClientSession::Step& step() const { return step_; }
  void set_step(SmtpClientSession::Step s) { step_ = std::move(s); }

 private:
  SmtpClientSession session_;
  SmtpClientSession::Step step_;
};

struct Expected {
  std::string recipient;
  int code;
  std::string reply;
};

void expect_results(const AttemptResult& r, const std::vector<Expected>& expected) {
  ASSERT_EQ(r.recipients.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(r.recipients[i].recipient, expected[i].recipient) << i;
    EXPECT_EQ(r.recipients[i].code, expected[i].code) << i;
    EXPECT_EQ(r.recipients[i].reply, expected[i].reply) << i;
  }
}

// --- the plain dialogue

TEST(SmtpClientSession, OneAtATimeWithoutPipelining) {
  Dialogue d(txn({"a@example.test", "b@example.test"}));
  EXPECT_EQ(d.hello(kEhloPlain), "MAIL FROM:<s@example.org>\r\n");
  EXPECT_EQ(d.session().waiting_for(), Wait::command);
  EXPECT_EQ(d.reply("250 2.1.0 Ok\r\n"), "RCPT TO:<a@example.test>\r\n");
  EXPECT_EQ(d.reply("250 2.1.5 Ok\r\n"), "RCPT TO:<b@example.test>\r\n");
  EXPECT_EQ(d.reply("550 5.1.1 No such user\r\n"), "DATA\r\n");
  EXPECT_EQ(d.session().waiting_for(), Wait::data_init);
  EXPECT_EQ(d.reply("354 go ahead\r\n"), kFramed);
  EXPECT_TRUE(d.step().content);
  EXPECT_EQ(d.session().waiting_for(), Wait::data_end);
  EXPECT_FALSE(d.session().finished());
  EXPECT_EQ(d.reply("250 2.0.0 Ok: queued as ABC\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  const auto r = d.session().result();
  EXPECT_FALSE(r.connection_failed) << r.error;
  expect_results(r, {{"a@example.test", 250, "250 2.0.0 Ok: queued as ABC"},
                     {"b@example.test", 550, "550 5.1.1 No such user"}});
}

TEST(SmtpClientSession, PipelinedGroupAndRepliesInOrder) {
  auto t = txn({"a@example.test", "b@example.test", "c@example.test"});
  t.body_8bitmime = true;
  Dialogue d(t);
  EXPECT_EQ(d.hello(kEhloFull),
            "MAIL FROM:<s@example.org> SIZE=" + std::to_string(kContent.size()) +
                " BODY=8BITMIME\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
                "RCPT TO:<c@example.test>\r\nDATA\r\n");
  EXPECT_EQ(d.session().waiting_for(), Wait::command);
  EXPECT_EQ(d.reply("250 2.1.0 Ok\r\n"), "");
  EXPECT_EQ(d.reply("450 4.2.0 Greylisted\r\n"), "");
  EXPECT_EQ(d.reply("250 2.1.5 Ok\r\n"), "");
  EXPECT_EQ(d.session().waiting_for(), Wait::command);
  EXPECT_EQ(d.reply("550-5.1.1 No such\r\n550 5.1.1 user\r\n"), "");
  EXPECT_EQ(d.session().waiting_for(), Wait::data_init);
  EXPECT_EQ(d.reply("354 go ahead\r\n"), kFramed);
  EXPECT_EQ(d.reply("451 4.3.0 Try later\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  const auto r = d.session().result();
  EXPECT_FALSE(r.connection_failed);
  expect_results(r, {{"a@example.test", 450, "450 4.2.0 Greylisted"},
                     {"b@example.test", 451, "451 4.3.0 Try later"},
                     {"c@example.test", 550, "550-5.1.1 No such 550 5.1.1 user"}});
}

TEST(SmtpClientSession, NullSender) {
  Dialogue d(txn({"a@example.test"}, ""));
  EXPECT_EQ(d.hello(kEhloPlain), "MAIL FROM:<>\r\n");
}

TEST(SmtpClientSession, HeloWhenEhloRefused) {
  Dialogue d;
  EXPECT_EQ(d.hello("502 5.5.2 Command not recognized\r\n"), "HELO client.example.org\r\n");
  EXPECT_EQ(d.reply("250 mx.example.test\r\n"), "MAIL FROM:<s@example.org>\r\n");
  EXPECT_EQ(d.session().extensions(), Extensions{});
}

TEST(SmtpClientSession, HeloRefusedFails) {
  Dialogue d;
  d.hello("500 what\r\n");
  EXPECT_EQ(d.reply("501 no\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  EXPECT_TRUE(d.session().result().connection_failed);
  EXPECT_EQ(d.session().result().error, "HELO refused: 501 no");
}

TEST(SmtpClientSession, EhloTransientFailureFailsTheConnection) {
  Dialogue d;
  EXPECT_EQ(d.hello("421 4.3.2 Shutting down\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  const auto r = d.session().result();
  EXPECT_TRUE(r.connection_failed);
  EXPECT_EQ(r.error, "EHLO refused: 421 4.3.2 Shutting down");
  EXPECT_TRUE(r.recipients.empty());
}

TEST(SmtpClientSession, GreetingMustBe220) {
  for (const char* greeting : {"554 5.7.1 Go away\r\n", "421 4.7.0 Busy\r\n", "250 hi\r\n", "221 bye\r\n"}) {
    Dialogue d;
    EXPECT_EQ(d.reply(greeting), "QUIT\r\n") << greeting;
    d.expect_quit_and_close();
    const auto r = d.session().result();
    EXPECT_TRUE(r.connection_failed);
    std::string text(greeting);
    text.resize(text.size() - 2);
    EXPECT_EQ(r.error, "bad greeting: " + text);
  }
}

// --- MAIL, RCPT and DATA refusals

TEST(SmtpClientSession, MailRefusedGivesEveryRecipientItsReply) {
  Dialogue d(txn({"a@example.test", "b@example.test"}));
  d.hello(kEhloPlain);
  EXPECT_EQ(d.reply("553 5.1.8 Sender refused\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  const auto r = d.session().result();
  EXPECT_FALSE(r.connection_failed);
  expect_results(r, {{"a@example.test", 553, "553 5.1.8 Sender refused"},
                     {"b@example.test", 553, "553 5.1.8 Sender refused"}});
}

TEST(SmtpClientSession, MailRefusedPipelined) {
  Dialogue d(txn({"a@example.test", "b@example.test"}));
  d.hello(kEhloFull);
  EXPECT_EQ(d.reply("451 4.3.0 Sender check failed\r\n"), "");
  EXPECT_EQ(d.reply("503 5.5.1 Need MAIL\r\n"), "");
  EXPECT_EQ(d.reply("503 5.5.1 Need MAIL\r\n"), "");
  EXPECT_EQ(d.reply("503 5.5.1 Need MAIL\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  expect_results(d.session().result(), {{"a@example.test", 451, "451 4.3.0 Sender check failed"},
                                        {"b@example.test", 451, "451 4.3.0 Sender check failed"}});
}

TEST(SmtpClientSession, NoRecipientAcceptedSendsNoData) {
  Dialogue d(txn({"a@example.test", "b@example.test"}));
  d.hello(kEhloPlain);
  d.reply("250 Ok\r\n");
  EXPECT_EQ(d.reply("550 5.1.1 a unknown\r\n"), "RCPT TO:<b@example.test>\r\n");
  EXPECT_EQ(d.reply("450 4.1.1 b later\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  expect_results(d.session().result(), {{"a@example.test", 550, "550 5.1.1 a unknown"},
                                        {"b@example.test", 450, "450 4.1.1 b later"}});
}

TEST(SmtpClientSession, NoRecipientAcceptedPipelinedDataRefused) {
  Dialogue d;
  d.hello(kEhloFull);
  d.reply("250 Ok\r\n");
  d.reply("550 5.1.1 unknown\r\n");
  EXPECT_EQ(d.reply("554 5.5.1 No valid recipients\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  expect_results(d.session().result(), {{"a@example.test", 550, "550 5.1.1 unknown"}});
}

TEST(SmtpClientSession, NoRecipientAcceptedButDataAcceptedSendsAnEmptyMessageEnd) {
  // RFC 2920 3.1: a server that answers 354 anyway gets only the end marker.
  Dialogue d;
  d.hello(kEhloFull);
  d.reply("250 Ok\r\n");
  d.reply("550 5.1.1 unknown\r\n");
  EXPECT_EQ(d.reply("354 go\r\n"), ".\r\n");
  EXPECT_EQ(d.session().waiting_for(), Wait::data_end);
  EXPECT_EQ(d.reply("250 2.0.0 Ok: queued as X\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  expect_results(d.session().result(), {{"a@example.test", 550, "550 5.1.1 unknown"}});
}

TEST(SmtpClientSession, DataRefusedGoesToAcceptedRecipientsOnly) {
  Dialogue d(txn({"a@example.test", "b@example.test"}));
  d.hello(kEhloPlain);
  d.reply("250 Ok\r\n");
  d.reply("250 Ok\r\n");
  d.reply("550 5.1.1 b unknown\r\n");
  EXPECT_EQ(d.reply("451 4.3.0 No DATA now\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  expect_results(d.session().result(), {{"a@example.test", 451, "451 4.3.0 No DATA now"},
                                        {"b@example.test", 550, "550 5.1.1 b unknown"}});
}

TEST(SmtpClientSession, EndOfDataRefused) {
  Dialogue d;
  d.hello(kEhloFull);
  d.reply("250 Ok\r\n");
  d.reply("250 Ok\r\n");
  d.reply("354 go\r\n");
  EXPECT_EQ(d.reply("554 5.7.1 Spam\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  expect_results(d.session().result(), {{"a@example.test", 554, "554 5.7.1 Spam"}});
}

TEST(SmtpClientSession, UnexpectedReplyClassesAreProtocolErrors) {
  {
    Dialogue d;
    d.hello(kEhloPlain);
    d.reply("250 Ok\r\n");
    EXPECT_EQ(d.reply("354 what\r\n"), "QUIT\r\n");
    const auto r = d.session().result();
    EXPECT_TRUE(r.connection_failed);
    EXPECT_EQ(r.error, "protocol error: unexpected reply to RCPT: 354 what");
  }
  {
    Dialogue d;
    d.hello(kEhloPlain);
    d.reply("250 Ok\r\n");
    d.reply("250 Ok\r\n");
    EXPECT_EQ(d.reply("250 Ok\r\n"), "QUIT\r\n");  // 250 to DATA: no content sent
    EXPECT_EQ(d.session().result().error, "protocol error: unexpected reply to DATA: 250 Ok");
    EXPECT_TRUE(d.session().result().recipients.empty());
  }
  {
    Dialogue d;
    d.hello(kEhloPlain);
    EXPECT_EQ(d.reply("354 hmm\r\n"), "QUIT\r\n");
    EXPECT_EQ(d.session().result().error, "protocol error: unexpected reply to MAIL: 354 hmm");
  }
  {
    Dialogue d;
    d.hello(kEhloPlain);
    d.reply("250 Ok\r\n");
    d.reply("250 Ok\r\n");
    d.reply("354 go\r\n");
    EXPECT_EQ(d.reply("354 again\r\n"), "QUIT\r\n");
    EXPECT_EQ(d.session().result().error, "protocol error: unexpected reply to end of data: 354 again");
    EXPECT_TRUE(d.session().result().recipients.empty());
  }
}

// --- local refusals before MAIL

TEST(SmtpClientSession, SmtpUtf8NotOfferedIsRefusedLocally) {
  auto t = txn({"ü@example.test", "b@example.test"});
  t.smtputf8 = true;
  Dialogue d(t);
  EXPECT_EQ(d.hello(kEhloPlain), "QUIT\r\n");  // no MAIL
  d.expect_quit_and_close();
  const auto r = d.session().result();
  EXPECT_FALSE(r.connection_failed);
  expect_results(r, {{"ü@example.test", 553, "553 5.6.7 SMTPUTF8 not supported by mx.example.test"},
                     {"b@example.test", 553, "553 5.6.7 SMTPUTF8 not supported by mx.example.test"}});
}

TEST(SmtpClientSession, SmtpUtf8Offered) {
  auto t = txn({"ü@example.test"});
  t.smtputf8 = true;
  t.body_8bitmime = true;
  Dialogue d(t);
  EXPECT_EQ(d.hello("250-mx\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n"),
            "MAIL FROM:<s@example.org> BODY=8BITMIME SMTPUTF8\r\n");
  EXPECT_EQ(d.reply("250 Ok\r\n"), "RCPT TO:<ü@example.test>\r\n");
}

TEST(SmtpClientSession, EightBitMimeOnlyWhenOffered) {
  auto t = txn();
  t.body_8bitmime = true;
  Dialogue d(t);
  EXPECT_EQ(d.hello(kEhloPlain), "MAIL FROM:<s@example.org>\r\n");
}

TEST(SmtpClientSession, SizeAboveTheAdvertisedLimitIsRefusedLocally) {
  Dialogue d;
  EXPECT_EQ(d.hello("250-mx\r\n250 SIZE 10\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  expect_results(d.session().result(), {{"a@example.test", 552,
                                         "552 5.3.4 Message size " + std::to_string(kContent.size()) +
                                             " exceeds the size limit 10 of mx.example.test"}});
}

TEST(SmtpClientSession, SizeAtTheLimitAndSizeZero) {
  {
    Dialogue d;
    const std::string at = std::to_string(kContent.size());
    EXPECT_EQ(d.hello("250-mx\r\n250 SIZE " + at + "\r\n"), "MAIL FROM:<s@example.org> SIZE=" + at + "\r\n");
  }
  {
    Dialogue d;  // SIZE 0 and a bare SIZE: no fixed limit (RFC 1870)
    EXPECT_EQ(d.hello("250-mx\r\n250 SIZE 0\r\n"),
              "MAIL FROM:<s@example.org> SIZE=" + std::to_string(kContent.size()) + "\r\n");
  }
  {
    Dialogue d;
    EXPECT_EQ(d.hello("250-mx\r\n250 SIZE\r\n"),
              "MAIL FROM:<s@example.org> SIZE=" + std::to_string(kContent.size()) + "\r\n");
  }
}

TEST(SmtpClientSession, AddressesThatWouldSplitACommandAreRefusedLocally) {
  Dialogue d(txn({"a@example.test>\r\nRSET", "b@example.test"}));
  EXPECT_EQ(d.hello(kEhloPlain), "MAIL FROM:<s@example.org>\r\n");
  EXPECT_EQ(d.reply("250 Ok\r\n"), "RCPT TO:<b@example.test>\r\n");
  EXPECT_EQ(d.reply("250 Ok\r\n"), "DATA\r\n");
  d.reply("354 go\r\n");
  d.reply("250 Ok\r\n");
  d.expect_quit_and_close();
  expect_results(d.session().result(),
                 {{"a@example.test>\r\nRSET", 501, "501 5.1.3 Bad recipient address syntax"},
                  {"b@example.test", 250, "250 Ok"}});

  Dialogue bad_sender(txn({"a@example.test"}, "s@x\nRCPT TO:<evil@x>"));
  EXPECT_EQ(bad_sender.hello(kEhloFull), "QUIT\r\n");
  expect_results(bad_sender.session().result(),
                 {{"a@example.test", 501, "501 5.1.7 Bad sender address syntax"}});
}

// --- STARTTLS

TEST(SmtpClientSession, StartTlsThenEhloAgain) {
  Dialogue d(txn(), TlsUse::required);
  EXPECT_EQ(d.hello(kEhloFull), "STARTTLS\r\n");
  EXPECT_EQ(d.reply("220 2.0.0 Ready to start TLS\r\n"), "");
  EXPECT_EQ(d.step().next, Next::start_tls);
  EXPECT_FALSE(d.session().tls_active());
  d.set_step(d.session().tls_established());
  EXPECT_EQ(d.step().output, "EHLO client.example.org\r\n");
  EXPECT_TRUE(d.session().tls_active());
  EXPECT_EQ(d.session().extensions(), Extensions{});  // forgotten until the new EHLO
  // A STARTTLS offered again after TLS is not taken.
  EXPECT_EQ(d.reply(kEhloFull), "MAIL FROM:<s@example.org> SIZE=" + std::to_string(kContent.size()) +
                                    "\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
}

TEST(SmtpClientSession, StartTlsRepliesMustBeExactly220) {
  for (const char* reply : {"250 2.0.0 Ok\r\n", "221 bye\r\n", "354 what\r\n"}) {
    for (const TlsUse use : {TlsUse::opportunistic, TlsUse::required}) {
      Dialogue d(txn(), use);
      d.hello(kEhloFull);
      d.reply(reply);
      EXPECT_NE(d.step().next, Next::start_tls) << reply;
      EXPECT_TRUE(d.session().result().connection_failed) << reply;
    }
  }
}

TEST(SmtpClientSession, StartTlsRefusedRequiredFails) {
  Dialogue d(txn(), TlsUse::required);
  d.hello(kEhloFull);
  EXPECT_EQ(d.reply("454 4.7.0 TLS not available\r\n"), "QUIT\r\n");
  d.expect_quit_and_close();
  const auto r = d.session().result();
  EXPECT_TRUE(r.connection_failed);
  EXPECT_EQ(r.error, "STARTTLS refused: 454 4.7.0 TLS not available");
  EXPECT_TRUE(r.recipients.empty());
}

TEST(SmtpClientSession, StartTlsRefusedOpportunisticGoesOnInCleartext) {
  Dialogue d(txn(), TlsUse::opportunistic);
  d.hello(kEhloFull);
  EXPECT_EQ(d.reply("454 4.7.0 TLS not available\r\n"),
            "MAIL FROM:<s@example.org> SIZE=" + std::to_string(kContent.size()) +
                "\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
  EXPECT_FALSE(d.session().tls_active());
}

TEST(SmtpClientSession, StartTlsNotOffered) {
  {
    Dialogue d(txn(), TlsUse::required);
    EXPECT_EQ(d.hello(kEhloTls), "QUIT\r\n");
    d.expect_quit_and_close();
    const auto r = d.session().result();
    EXPECT_TRUE(r.connection_failed);
    EXPECT_EQ(r.error, "STARTTLS not offered");
    EXPECT_TRUE(r.recipients.empty());
  }
  {
    Dialogue d(txn(), TlsUse::required);  // HELO fallback: no extensions, so no STARTTLS
    d.hello("500 no\r\n");
    EXPECT_EQ(d.reply("250 mx\r\n"), "QUIT\r\n");
    EXPECT_EQ(d.session().result().error, "STARTTLS not offered");
  }
  {
    Dialogue d(txn(), TlsUse::opportunistic);
    EXPECT_EQ(d.hello(kEhloPlain), "MAIL FROM:<s@example.org>\r\n");
  }
  {
    Dialogue d(txn(), TlsUse::none);  // offered but not wanted
    EXPECT_EQ(d.hello(kEhloFull).substr(0, 5), "MAIL ");
  }
}

TEST(SmtpClientSession, TlsFailureFailsTheConnection) {
  Dialogue d(txn(), TlsUse::required);
  d.hello(kEhloFull);
  d.reply("220 go\r\n");
  d.session().tls_failed("TLSA mismatch");
  const auto r = d.session().result();
  EXPECT_TRUE(r.connection_failed);
  EXPECT_EQ(r.error, "TLSA mismatch");
  EXPECT_TRUE(d.session().finished());
}

// --- lost connections

TEST(SmtpClientSession, LostConnectionKeepsFinalAnswersSoFar) {
  Dialogue d(txn({"a@example.test", "b@example.test"}));
  d.hello(kEhloPlain);
  d.reply("250 Ok\r\n");
  d.reply("550 5.1.1 a unknown\r\n");
  d.session().connection_lost("timeout");
  const auto r = d.session().result();
  EXPECT_TRUE(r.connection_failed);
  EXPECT_EQ(r.error, "timeout while waiting for the reply to RCPT");
  expect_results(r, {{"a@example.test", 550, "550 5.1.1 a unknown"}});
}

TEST(SmtpClientSession, LostConnectionStages) {
  {
    Dialogue d;
    d.session().connection_lost("connection closed");
    EXPECT_EQ(d.session().result().error, "connection closed while waiting for the greeting");
  }
  {
    Dialogue d;
    d.hello(kEhloFull);
    d.reply("250 Ok\r\n");
    d.reply("250 Ok\r\n");
    d.session().connection_lost("timeout");
    EXPECT_EQ(d.session().result().error, "timeout while waiting for the reply to DATA");
  }
  {
    Dialogue d;
    d.hello(kEhloFull);
    d.reply("250 Ok\r\n");
    d.reply("250 Ok\r\n");
    d.reply("354 go\r\n");
    d.session().connection_lost("timeout");
    const auto r = d.session().result();
    EXPECT_EQ(r.error, "timeout while waiting for the reply to end of data");
    EXPECT_TRUE(r.recipients.empty());  // accepted but unanswered: deferred by the caller
  }
}

TEST(SmtpClientSession, LostConnectionDuringQuitChangesNothing) {
  Dialogue d;
  d.hello(kEhloFull);
  d.reply("250 Ok\r\n");
  d.reply("250 Ok\r\n");
  d.reply("354 go\r\n");
  d.reply("250 2.0.0 Ok\r\n");
  ASSERT_TRUE(d.session().finished());
  d.session().connection_lost("connection closed");
  const auto r = d.session().result();
  EXPECT_FALSE(r.connection_failed);
  expect_results(r, {{"a@example.test", 250, "250 2.0.0 Ok"}});
}

// --- EHLO parsing

TEST(SmtpClientEhlo, Keywords) {
  const Extensions e = parse_ehlo(parse(kEhloFull));
  EXPECT_TRUE(e.pipelining);
  EXPECT_TRUE(e.size);
  EXPECT_EQ(e.size_limit, 36700160u);
  EXPECT_TRUE(e.starttls);
  EXPECT_TRUE(e.eightbitmime);
  EXPECT_TRUE(e.enhanced_status_codes);
  EXPECT_TRUE(e.smtputf8);
  EXPECT_TRUE(e.chunking);
}

TEST(SmtpClientEhlo, CaseSpacesAndUnknownKeywords) {
  const Extensions e = parse_ehlo(
      parse("250-PIPELINING STARTTLS\r\n250-pipelining\r\n250-Size  1000 \r\n250-AUTH PLAIN LOGIN\r\n"
            "250-X-STARTTLS\r\n250-STARTTLSX\r\n250-8bitmime\r\n250 smtputf8\r\n"));
  EXPECT_TRUE(e.pipelining);
  EXPECT_TRUE(e.size);
  EXPECT_EQ(e.size_limit, 1000u);
  EXPECT_FALSE(e.starttls);  // only in the first line (the server's name) and in look-alikes
  EXPECT_TRUE(e.eightbitmime);
  EXPECT_TRUE(e.smtputf8);
  EXPECT_FALSE(e.chunking);
}

TEST(SmtpClientEhlo, SizeWithoutOrWithBadNumber) {
  for (const char* line : {"250 SIZE\r\n", "250 SIZE abc\r\n", "250 SIZE 12x\r\n", "250 SIZE -5\r\n",
                           "250 SIZE 99999999999999999999999\r\n"}) {
    const std::string wire = "250-mx\r\n" + std::string(line);
    const Extensions e = parse_ehlo(parse(wire));
    EXPECT_TRUE(e.size) << line;
    EXPECT_EQ(e.size_limit, 0u) << line;
  }
}

TEST(SmtpClientEhlo, SingleLineHasNoExtensions) {
  EXPECT_EQ(parse_ehlo(parse("250 mx.example.test\r\n")), Extensions{});
}

}  // namespace
}  // namespace mxgate::delivery

// --- connection reuse: a parked session's state carried into a new transaction

namespace mxgate::delivery {
namespace {

TEST(SmtpClientSessionReuse, ReusableOnlyAfterACompletedTransaction) {
  Dialogue d;
  EXPECT_EQ(d.hello(kEhloTls), "MAIL FROM:<s@example.org> SIZE=" + std::to_string(kContent.size()) +
                                  "\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
  EXPECT_FALSE(d.session().reusable());
  EXPECT_EQ(d.reply("250 2.1.0 Ok\r\n"), "");
  EXPECT_EQ(d.reply("250 2.1.5 Ok\r\n"), "");
  EXPECT_FALSE(d.session().content_sent());
  EXPECT_EQ(d.reply("354 go ahead\r\n"), kFramed);
  EXPECT_TRUE(d.session().content_sent());
  EXPECT_FALSE(d.session().reusable());
  EXPECT_EQ(d.reply("250 2.0.0 Ok: queued as A\r\n"), "QUIT\r\n");
  EXPECT_TRUE(d.session().reusable());

  // The next transaction on the same connection starts with MAIL (pipelined,
  // as the EHLO reply allowed), with no greeting, EHLO or STARTTLS.
  SmtpClientSession next({"client.example.org", "mx.example.test", TlsUse::required}, txn({"b@example.test"}),
                         kContent);
  auto step = next.resume(d.session().extensions(), true);
  EXPECT_EQ(step.output, "MAIL FROM:<s@example.org> SIZE=" + std::to_string(kContent.size()) +
                             "\r\nRCPT TO:<b@example.test>\r\nDATA\r\n");
  EXPECT_TRUE(next.tls_active());
  step = next.on_reply(parse("250 2.1.0 Ok\r\n"));
  step = next.on_reply(parse("250 2.1.5 Ok\r\n"));
  step = next.on_reply(parse("354 go ahead\r\n"));
  EXPECT_EQ(written(next, step), kFramed);
  step = next.on_reply(parse("250 2.0.0 Ok: queued as B\r\n"));
  EXPECT_EQ(step.output, "QUIT\r\n");
  EXPECT_TRUE(next.reusable());
  expect_results(next.result(), {{"b@example.test", 250, "250 2.0.0 Ok: queued as B"}});
}

TEST(SmtpClientSessionReuse, NotReusableAfterRefusalsOr421) {
  {
    Dialogue d;  // every recipient refused: no content, the transaction is left open
    d.hello(kEhloTls);
    d.reply("250 2.1.0 Ok\r\n");
    d.reply("550 5.1.1 No such user\r\n");
    EXPECT_EQ(d.reply("554 5.5.1 No valid recipients\r\n"), "QUIT\r\n");
    EXPECT_FALSE(d.session().reusable());
  }
  {
    Dialogue d;  // 421 to end of data: the server is closing
    d.hello(kEhloTls);
    d.reply("250 2.1.0 Ok\r\n");
    d.reply("250 2.1.5 Ok\r\n");
    d.reply("354 go ahead\r\n");
    EXPECT_EQ(d.reply("421 4.3.0 Closing\r\n"), "QUIT\r\n");
    EXPECT_FALSE(d.session().reusable());
  }
  {
    // A dead parked connection: EOF while waiting for the reply to MAIL.
    SmtpClientSession next({"client.example.org", "mx.example.test", TlsUse::none}, txn(), kContent);
    next.resume(parse_ehlo(parse(kEhloPlain)), false);
    next.connection_lost("connection closed");
    EXPECT_TRUE(next.result().connection_failed);
    EXPECT_FALSE(next.content_sent());
    EXPECT_FALSE(next.reusable());
  }
}

}  // namespace
}  // namespace mxgate::delivery
