// The milter client state machine (src/milter/session.hpp) against a
// scripted milter, no socket: the commands it sends are written as a golden
// transcript ("O DC C H DM M ..." : each packet's letter, "D" plus the stage
// for macros), every scenario is run twice (the milter's bytes handed over
// whole and byte by byte) and must come out the same.  Covered: the full
// conversation and the bytes of its packets, every no-send flag
// (SMFIP_NO*), every no-reply flag (SMFIP_NR_*: the milter does not answer,
// and the session must not wait), verdicts at every step with and without
// SMFIC_ABORT, modifications, quarantine, SKIP, PROGRESS, ignored
// modifications, negotiation corner cases, every protocol error with its
// exact message, and the pure helpers split_header_block and
// apply_header_changes (src/milter/client.hpp).
#include "milter/session.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "milter/client.hpp"
#include "milter/codec.hpp"

namespace mxgate::milter {
namespace {

using namespace std::string_literals;

std::string u32(std::uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                     static_cast<char>(v)};
}

// One reply packet.
std::string r(char reply, const std::string& data = "") { return encode_packet(reply, data); }
std::string header_reply(char reply, std::string_view name, std::string_view value) {
  return r(reply, std::string(name) + '\0' + std::string(value) + '\0');
}
std::string indexed_header_reply(char reply, std::uint32_t index, std::string_view name,
                                 std::string_view value) {
  return r(reply, u32(index) + std::string(name) + '\0' + std::string(value) + '\0');
}

// A milter that answers as it negotiated, from a script.
struct FakeMilter {
  std::uint32_t version = 6;
  std::uint32_t actions = smfif::kAddHeaders | smfif::kChangeHeaders | smfif::kQuarantine;
  std::uint32_t protocol = 0;
  std::string negotiation_reply;  // raw bytes instead of the usual 'O' packet
  // For each command letter, the raw bytes to answer its 1st, 2nd, ...
  // occurrence; when the queue is empty the default: SMFIR_CONTINUE, or
  // SMFIR_ACCEPT for SMFIC_BODYEOB, unless the SMFIP_NR_* bit says no reply.
  std::map<char, std::deque<std::string>> script;

  bool answers(char command) const {
    switch (command) {
      case 'O':
      case 'E':
        return true;
      case 'C':
        return (protocol & smfip::kNoReplyConnect) == 0;
      case 'H':
        return (protocol & smfip::kNoReplyHelo) == 0;
      case 'M':
        return (protocol & smfip::kNoReplyMail) == 0;
      case 'R':
        return (protocol & smfip::kNoReplyRecipient) == 0;
      case 'T':
        return (protocol & smfip::kNoReplyData) == 0;
      case 'L':
        return (protocol & smfip::kNoReplyHeader) == 0;
      case 'N':
        return (protocol & smfip::kNoReplyEndOfHeaders) == 0;
      case 'B':
        return (protocol & smfip::kNoReplyBody) == 0;
      default:
        return false;
    }
  }

  std::string on_packet(const Packet& packet) {
    if (packet.command == 'O')
      return !negotiation_reply.empty() ? negotiation_reply
                                        : r('O', u32(version) + u32(actions) + u32(protocol));
    auto it = script.find(packet.command);
    if (it != script.end() && !it->second.empty()) {
      std::string bytes = std::move(it->second.front());
      it->second.pop_front();
      return bytes;
    }
    if (!answers(packet.command)) return "";
    return r(packet.command == 'E' ? 'a' : 'c');
  }
};

enum class Feed { whole, byte_by_byte };

struct Transcript {
  std::string commands;  // the golden transcript
  std::vector<Packet> sent;
  Result<MilterResult> result = make_error("not run");
  std::string summary;
  std::uint64_t progress = 0;
  std::size_t steps = 0;
  std::size_t largest_step = 0;
  std::uint32_t protocol = 0;

  const Packet* find(char command, std::size_t nth = 0) const {
    for (const Packet& packet : sent)
      if (packet.command == command && nth-- == 0) return &packet;
    return nullptr;
  }
  std::size_t count(char command) const {
    std::size_t n = 0;
    for (const Packet& packet : sent) n += packet.command == command;
    return n;
  }
};

std::string summarize(const Result<MilterResult>& result) {
  if (!result) return "error: " + result.error();
  static const char* const kActions[] = {"accept", "reject", "tempfail", "discard", "quarantine"};
  static const char* const kKinds[] = {"add", "insert", "change"};
  std::string out = kActions[static_cast<int>(result->action)];
  if (!result->reply.empty()) out += " reply=" + quote_text(result->reply);
  if (!result->quarantine_reason.empty()) out += " reason=" + quote_text(result->quarantine_reason);
  for (const HeaderChange& c : result->header_changes)
    out += " [" + std::string(kKinds[static_cast<int>(c.kind)]) + " " + std::to_string(c.index) + " " +
           c.name + ":" + quote_text(c.value) + "]";
  for (const std::string& note : result->notes) out += " {" + note + "}";
  return out;
}

Transcript drive_once(const MilterMessage& message, FakeMilter milter, Feed feed) {
  MilterSession session(message);
  PacketDecoder decoder;
  std::string pending;  // the milter's bytes not yet handed over
  Transcript run;
  for (int guard = 0; guard < 100000; ++guard) {
    MilterSession::Step step = session.advance();
    ++run.steps;
    run.largest_step = std::max(run.largest_step, step.output.size());
    std::string_view out = step.output;
    while (!out.empty()) {
      out.remove_prefix(decoder.feed(out));
      if (decoder.state() == PacketDecoder::State::packet) {
        Packet packet = decoder.take();
        if (!run.commands.empty()) run.commands += ' ';
        run.commands += packet.command;
        if (packet.command == 'D' && !packet.data.empty()) run.commands += packet.data[0];
        pending += milter.on_packet(packet);
        run.sent.push_back(std::move(packet));
      } else if (decoder.state() == PacketDecoder::State::failed) {
        ADD_FAILURE() << "the session wrote a bad packet: " << decoder.error();
        break;
      }
    }
    if (step.next == MilterSession::Next::close) break;
    if (step.next == MilterSession::Next::write) continue;
    if (pending.empty()) {
      session.receive_eof();
      continue;
    }
    const std::size_t n = feed == Feed::whole ? pending.size() : 1;
    session.receive(std::string_view(pending).substr(0, n));
    pending.erase(0, n);
  }
  EXPECT_TRUE(session.finished());
  EXPECT_FALSE(decoder.mid_packet()) << "a packet was cut";
  run.result = session.result();
  run.summary = summarize(run.result);
  run.progress = session.progress_count();
  run.protocol = session.protocol();
  return run;
}

// Both ways of handing over the milter's bytes must give the same.
Transcript drive(const MilterMessage& message, const FakeMilter& milter) {
  Transcript whole = drive_once(message, milter, Feed::whole);
  Transcript bytes = drive_once(message, milter, Feed::byte_by_byte);
  EXPECT_EQ(whole.commands, bytes.commands);
  EXPECT_EQ(whole.summary, bytes.summary);
  EXPECT_EQ(whole.progress, bytes.progress);
  return whole;
}

MilterMessage message() {
  MilterMessage m;
  m.client_address = "192.0.2.1";
  m.client_port = 2525;
  m.client_name = "client.example";
  m.helo = "helo.example";
  m.sender = "a@example.com";
  m.recipients = {"b@example.org", "c@example.org"};
  m.content = "From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello\r\n";
  m.queue_id = "QID1";
  m.our_hostname = "mx.example";
  return m;
}

constexpr const char* kFull = "O DC C H DM M DR R DR R DT T L L L DN N B DE E Q";
constexpr const char* kFullWithoutQuit = "O DC C H DM M DR R DR R DT T L L L DN N B DE E";

// ---------------------------------------------------------------------------
// The conversation

TEST(MilterSession, FullConversationAndItsBytes) {
  const MilterMessage m = message();
  const Transcript run = drive(m, FakeMilter{});
  EXPECT_EQ(run.commands, kFull);
  EXPECT_EQ(run.summary, "accept");

  EXPECT_EQ(run.find('O')->data, u32(6) + u32(0x31) + u32(0x1ff7ff));
  EXPECT_EQ(MilterSession::kOfferedProtocol, 0x1ff7ffu);
  EXPECT_EQ(run.find('D', 0)->data,
            "Cj\0mx.example\0_\0client.example [192.0.2.1]\0{daemon_name}\0mxgate\0v\0mxgate\0"
            "{client_addr}\0"
            "192.0.2.1\0{client_name}\0client.example\0{client_port}\0"
            "2525\0"s);
  EXPECT_EQ(run.find('C')->data,
            "client.example\0"
            "4\x09\xdd"
            "192.0.2.1\0"s);
  EXPECT_EQ(run.find('H')->data, "helo.example\0"s);
  EXPECT_EQ(run.find('D', 1)->data, "Mi\0QID1\0{mail_addr}\0a@example.com\0"s);
  EXPECT_EQ(run.find('M')->data, "<a@example.com>\0"s);
  EXPECT_EQ(run.find('D', 2)->data, "Ri\0QID1\0{rcpt_addr}\0b@example.org\0"s);
  EXPECT_EQ(run.find('R', 1)->data, "<c@example.org>\0"s);
  EXPECT_EQ(run.find('D', 4)->data, "Ti\0QID1\0"s);
  EXPECT_EQ(run.find('T')->data, "");
  EXPECT_EQ(run.find('L', 0)->data, "From\0a@example.com\0"s);
  EXPECT_EQ(run.find('L', 2)->data, "Subject\0hi\0"s);
  EXPECT_EQ(run.find('D', 5)->data, "Ni\0QID1\0"s);
  EXPECT_EQ(run.find('B')->data, "Hello\r\n");
  EXPECT_EQ(run.find('D', 6)->data, "Ei\0QID1\0"s);
  EXPECT_EQ(run.find('E')->data, "");
  EXPECT_EQ(run.find('Q')->data, "");
}

TEST(MilterSession, NullSenderEmptyValuesAndConnectForms) {
  MilterMessage m = message();
  m.sender = "";
  m.queue_id = "";
  m.client_port = 0;
  Transcript run = drive(m, FakeMilter{});
  EXPECT_EQ(run.find('M')->data, "<>\0"s);
  // Empty macro values are left out; a stage without any sends no SMFIC_MACRO.
  EXPECT_EQ(run.commands, "O DC C H M DR R DR R T L L L N B E Q");
  EXPECT_EQ(run.find('D', 1)->data, "R{rcpt_addr}\0b@example.org\0"s);

  m = message();
  m.client_address = "2001:db8::1";
  m.client_name = "";
  run = drive(m, FakeMilter{});
  EXPECT_EQ(run.find('C')->data,
            "[2001:db8::1]\0"
            "6\x09\xdd"
            "2001:db8::1\0"s);

  m.client_address = "";
  run = drive(m, FakeMilter{});
  EXPECT_EQ(run.find('C')->data, "unknown\0U"s);

  m = message();
  m.helo = "";
  EXPECT_EQ(drive(m, FakeMilter{}).commands, "O DC C DM M DR R DR R DT T L L L DN N B DE E Q");

  m = message();
  m.content = "Subject: no body\r\n\r\n";
  EXPECT_EQ(drive(m, FakeMilter{}).commands, "O DC C H DM M DR R DR R DT T L DN N DE E Q");
  m.recipients.clear();
  EXPECT_EQ(drive(m, FakeMilter{}).commands, "O DC C H DM M DT T L DN N DE E Q");
}

TEST(MilterSession, EveryNoSendFlagLeavesItsStepOutButKeepsTheMacros) {
  const std::pair<std::uint32_t, const char*> cases[] = {
      {smfip::kNoConnect, "O DC H DM M DR R DR R DT T L L L DN N B DE E Q"},
      {smfip::kNoHelo, "O DC C DM M DR R DR R DT T L L L DN N B DE E Q"},
      {smfip::kNoMail, "O DC C H DM DR R DR R DT T L L L DN N B DE E Q"},
      {smfip::kNoRecipient, "O DC C H DM M DR DR DT T L L L DN N B DE E Q"},
      {smfip::kNoData, "O DC C H DM M DR R DR R DT L L L DN N B DE E Q"},
      {smfip::kNoHeaders, "O DC C H DM M DR R DR R DT T DN N B DE E Q"},
      {smfip::kNoEndOfHeaders, "O DC C H DM M DR R DR R DT T L L L DN B DE E Q"},
      {smfip::kNoBody, "O DC C H DM M DR R DR R DT T L L L DN N DE E Q"},
      {smfip::kNoConnect | smfip::kNoHelo | smfip::kNoMail | smfip::kNoRecipient | smfip::kNoData |
           smfip::kNoHeaders | smfip::kNoEndOfHeaders | smfip::kNoBody,
       "O DC DM DR DR DT DN DE E Q"},
  };
  for (const auto& [flag, expected] : cases) {
    SCOPED_TRACE(flag);
    FakeMilter milter;
    milter.protocol = flag;
    const Transcript run = drive(message(), milter);
    EXPECT_EQ(run.commands, expected);
    EXPECT_EQ(run.summary, "accept");
  }
}

TEST(MilterSession, EveryNoReplyFlagIsNotWaitedFor) {
  // The fake milter stays silent where it said it would: a session that
  // waited would see the end of the connection and fail.
  const std::uint32_t flags[] = {smfip::kNoReplyConnect,      smfip::kNoReplyHelo, smfip::kNoReplyMail,
                                 smfip::kNoReplyRecipient,    smfip::kNoReplyData, smfip::kNoReplyHeader,
                                 smfip::kNoReplyEndOfHeaders, smfip::kNoReplyBody};
  std::uint32_t all = 0;
  for (const std::uint32_t flag : flags) {
    SCOPED_TRACE(flag);
    all |= flag;
    FakeMilter milter;
    milter.protocol = flag;
    const Transcript run = drive(message(), milter);
    EXPECT_EQ(run.commands, kFull);
    EXPECT_EQ(run.summary, "accept");
  }
  FakeMilter milter;
  milter.protocol = all;
  const Transcript run = drive(message(), milter);
  EXPECT_EQ(run.commands, kFull);
  EXPECT_EQ(run.summary, "accept");
  // Negotiation, everything up to SMFIC_BODYEOB in one write, QUIT.
  EXPECT_EQ(run.steps, 3u);
}

TEST(MilterSession, LargeUnansweredBodyIsWrittenInBoundedSteps) {
  MilterMessage m = message();
  m.content = "Subject: big\r\n\r\n" + std::string(1'000'000, 'x');
  FakeMilter milter;
  milter.protocol = smfip::kNoReplyBody;
  const Transcript run = drive_once(m, milter, Feed::whole);
  EXPECT_EQ(run.summary, "accept");
  EXPECT_EQ(run.count('B'), 16u);  // 15 x 65535 + 16975
  EXPECT_EQ(run.find('B', 0)->data.size(), kMaxBodyChunk);
  EXPECT_EQ(run.find('B', 15)->data.size(), 16975u);
  EXPECT_LE(run.largest_step, MilterSession::kMaxOutputPerStep + kMaxBodyChunk + 64);
  std::string body;
  for (std::size_t i = 0; i < run.sent.size(); ++i)
    if (run.sent[i].command == 'B') body += run.sent[i].data;
  EXPECT_EQ(body, std::string(1'000'000, 'x'));
}

TEST(MilterSession, VersionTwoMilterGetsNoDataStep) {
  FakeMilter milter;
  milter.version = 2;
  EXPECT_EQ(drive(message(), milter).commands, "O DC C H DM M DR R DR R L L L DN N B DE E Q");
  milter.version = 4;
  EXPECT_EQ(drive(message(), milter).commands, kFull);
}

TEST(MilterSession, HeaderValuesAsSentWithAndWithoutLeadingSpace) {
  MilterMessage m = message();
  m.content =
      "Subject: hi\r\n"
      "X-Two:  two spaces\r\n"
      "X-Tab:\ttab\r\n"
      "X-Fold: a\r\n b\r\n\tc\r\n"
      "X-Empty:\r\n"
      "X-Spaced : v\r\n"
      "\r\n"
      "body\r\n";
  Transcript run = drive(m, FakeMilter{});
  EXPECT_EQ(run.find('L', 0)->data, "Subject\0hi\0"s);
  EXPECT_EQ(run.find('L', 1)->data, "X-Two\0 two spaces\0"s);
  EXPECT_EQ(run.find('L', 2)->data, "X-Tab\0\ttab\0"s);
  EXPECT_EQ(run.find('L', 3)->data, "X-Fold\0a\n b\n\tc\0"s);
  EXPECT_EQ(run.find('L', 4)->data, "X-Empty\0\0"s);
  EXPECT_EQ(run.find('L', 5)->data, "X-Spaced\0v\0"s);

  FakeMilter leadspc;
  leadspc.protocol = smfip::kHeaderLeadingSpace;
  run = drive(m, leadspc);
  EXPECT_EQ(run.find('L', 0)->data, "Subject\0 hi\0"s);
  EXPECT_EQ(run.find('L', 1)->data, "X-Two\0  two spaces\0"s);
  EXPECT_EQ(run.find('L', 3)->data, "X-Fold\0 a\n b\n\tc\0"s);
}

// ---------------------------------------------------------------------------
// Verdicts

struct VerdictCase {
  char at;
  int occurrence;  // of the command
  std::string reply;
  const char* commands;
  const char* summary;
};

TEST(MilterSession, VerdictsAtEveryStep) {
  const VerdictCase cases[] = {
      {'C', 0, r('a'), "O DC C Q", "accept"},
      {'C', 0, r('r'), "O DC C Q", "reject"},
      {'C', 0, r('t'), "O DC C Q", "tempfail"},
      {'C', 0, r('y', "554 5.7.1 Go away\0"s), "O DC C Q", "reject reply=\"554 5.7.1 Go away\""},
      {'H', 0, r('t'), "O DC C H Q", "tempfail"},
      {'M', 0, r('r'), "O DC C H DM M A Q", "reject"},
      {'R', 1, r('a'), "O DC C H DM M DR R DR R A Q", "accept"},
      {'T', 0, r('t'), "O DC C H DM M DR R DR R DT T A Q", "tempfail"},
      {'L', 1, r('d'), "O DC C H DM M DR R DR R DT T L L A Q", "discard"},
      {'N', 0, r('a'), "O DC C H DM M DR R DR R DT T L L L DN N A Q", "accept"},
      {'B', 0, r('y', "451 4.7.1 Try later\0"s), "O DC C H DM M DR R DR R DT T L L L DN N B A Q",
       "tempfail reply=\"451 4.7.1 Try later\""},
      {'E', 0, r('r'), kFull, "reject"},
      {'E', 0, r('t'), kFull, "tempfail"},
      {'E', 0, r('d'), kFull, "discard"},
      {'E', 0, r('c'), kFull, "accept"},
      {'E', 0, r('y', "550 5.7.1 Virus found\0"s), kFull, "reject reply=\"550 5.7.1 Virus found\""},
      {'M', 0, r('4'), "O DC C H DM M A Q",
       "tempfail {SMFIR_SHUTDOWN (the milter asks to end the SMTP session) was taken as a tempfail}"},
      {'C', 0, r('f'), "O DC C Q",
       "tempfail {SMFIR_CONN_FAIL (the milter asks to end the SMTP session) was taken as a tempfail}"},
      {'C', 0, r('d'), kFull,
       "accept {ignored SMFIR_DISCARD in reply to SMFIC_CONNECT: discard applies to messages only}"},
      {'H', 0, r('d'), kFull,
       "accept {ignored SMFIR_DISCARD in reply to SMFIC_HELO: discard applies to messages only}"},
  };
  for (const VerdictCase& c : cases) {
    SCOPED_TRACE(std::string(1, c.at) + " " + quote_text(c.reply));
    FakeMilter milter;
    for (int i = 0; i < c.occurrence; ++i) milter.script[c.at].push_back(r('c'));
    milter.script[c.at].push_back(c.reply);
    const Transcript run = drive(message(), milter);
    EXPECT_EQ(run.commands, c.commands);
    EXPECT_EQ(run.summary, c.summary);
  }
}

TEST(MilterSession, ARecipientVerdictAppliesToTheWholeMessage) {
  FakeMilter milter;
  milter.script['R'] = {r('c'), r('y', "550 5.1.1 No such user\0"s)};
  Transcript run = drive(message(), milter);
  EXPECT_EQ(run.commands, "O DC C H DM M DR R DR R A Q");
  EXPECT_EQ(run.summary,
            "reject reply=\"550 5.1.1 No such user\" {the milter's verdict for recipient \"c@example.org\" "
            "applies to the whole message of 2 recipients}");
  // With one recipient there is nothing to say.
  MilterMessage m = message();
  m.recipients = {"b@example.org"};
  milter.script['R'] = {r('r')};
  EXPECT_EQ(drive(m, milter).summary, "reject");
}

TEST(MilterSession, Quarantine) {
  FakeMilter milter;
  milter.script['E'] = {r('q', "virus found\0"s) + r('c')};
  EXPECT_EQ(drive(message(), milter).summary, "quarantine reason=\"virus found\"");
  // At an earlier step it does not end the step (as in Postfix).
  milter.script.clear();
  milter.script['R'] = {r('q', "suspicious\0"s) + r('c')};
  Transcript run = drive(message(), milter);
  EXPECT_EQ(run.commands, kFull);
  EXPECT_EQ(run.summary, "quarantine reason=\"suspicious\"");
  // A reject still rejects.
  milter.script.clear();
  milter.script['E'] = {r('q', "x\0"s) + r('r')};
  EXPECT_EQ(drive(message(), milter).summary, "reject reason=\"x\"");
  // An early accept after a quarantine keeps it.
  milter.script.clear();
  milter.script['C'] = {r('q', "y\0"s) + r('a')};
  run = drive(message(), milter);
  EXPECT_EQ(run.commands, "O DC C Q");
  EXPECT_EQ(run.summary, "quarantine reason=\"y\"");
}

// ---------------------------------------------------------------------------
// Modifications

TEST(MilterSession, HeaderChangesWithoutLeadingSpaceGetTheMtaSpace) {
  FakeMilter milter;
  milter.script['E'] = {header_reply('h', "X-Virus-Scanned", "ClamAV") +
                        indexed_header_reply('i', 0, "X-Inserted", "two\n\tlines") +
                        indexed_header_reply('m', 2, "X-Changed", "") +
                        indexed_header_reply('m', 0, "X-Zero", "v") + header_reply('h', "X-Empty", "") +
                        r('a')};
  EXPECT_EQ(drive(message(), milter).summary,
            "accept [add 0 X-Virus-Scanned:\" ClamAV\"] [insert 0 X-Inserted:\" two\\x0d\\x0a\\x09lines\"] "
            "[change 2 X-Changed:\"\"] [change 1 X-Zero:\" v\"] [add 0 X-Empty:\"\"]");
}

TEST(MilterSession, HeaderChangesWithLeadingSpaceAreTakenAsSent) {
  FakeMilter milter;
  milter.protocol = smfip::kHeaderLeadingSpace;
  milter.script['E'] = {indexed_header_reply('i', 0, "DKIM-Signature", " v=1; a=rsa-sha256;\n\tb=abc") +
                        header_reply('h', "X-Tight", "none") +
                        indexed_header_reply('i', 3, "X-CRLF", " a\r\n b") + r('c')};
  EXPECT_EQ(
      drive(message(), milter).summary,
      "accept [insert 0 DKIM-Signature:\" v=1; a=rsa-sha256;\\x0d\\x0a\\x09b=abc\"] [add 0 X-Tight:\"none\"] "
      "[insert 3 X-CRLF:\" a\\x0d\\x0a b\"]");
}

TEST(MilterSession, UnsupportedModificationsAreIgnoredWithANote) {
  FakeMilter milter;
  milter.script['E'] = {r('+', "<new@example.org>\0"s) + r('-', "<b@example.org>\0"s) +
                        r('2', "<p@example.org>\0NOTIFY=NEVER\0"s) + r('e', "<other@example.com>\0"s) +
                        r('b', "new body\r\n") + r('b', "more\r\n") + header_reply('h', "X-Kept", "yes") +
                        r('a')};
  EXPECT_EQ(drive(message(), milter).summary,
            "accept [add 0 X-Kept:\" yes\"] "
            "{ignored SMFIR_ADDRCPT \"<new@example.org>\": recipient changes are not supported} "
            "{ignored SMFIR_DELRCPT \"<b@example.org>\": recipient changes are not supported} "
            "{ignored SMFIR_ADDRCPT_PAR \"<p@example.org>\": recipient changes are not supported} "
            "{ignored SMFIR_CHGFROM \"<other@example.com>\": sender changes are not supported} "
            "{ignored SMFIR_REPLBODY (16 bytes in 2 packets): body replacement is not supported}");
}

TEST(MilterSession, NotesAreBounded) {
  FakeMilter milter;
  std::string replies;
  for (int i = 0; i < 30; ++i) replies += r('+', "<x" + std::to_string(i) + "@y>\0"s);
  milter.script['E'] = {replies + r('a')};
  const Transcript run = drive(message(), milter);
  ASSERT_TRUE(run.result);
  ASSERT_EQ(run.result->notes.size(), MilterSession::kMaxNotes + 1);
  EXPECT_EQ(run.result->notes.back(), "10 more notes left out");
}

TEST(MilterSession, HeaderChangeLimits) {
  FakeMilter milter;
  std::string replies;
  for (std::size_t i = 0; i < MilterSession::kMaxHeaderChanges; ++i) replies += header_reply('h', "X", "v");
  milter.script['E'] = {replies + r('a')};
  Transcript run = drive_once(message(), milter, Feed::whole);
  ASSERT_TRUE(run.result) << run.result.error();
  EXPECT_EQ(run.result->header_changes.size(), MilterSession::kMaxHeaderChanges);
  milter.script['E'] = {replies + header_reply('h', "X", "v") + r('a')};
  run = drive_once(message(), milter, Feed::whole);
  EXPECT_EQ(run.summary, "error: the milter sent more than 1000 header changes or 1048576 bytes of them");
  // Bytes: name and value as kept (the MTA's space included): 16 changes of
  // 1 + 1 + 65534 bytes are exactly 1 MiB; one more byte is past it.
  std::string big;
  for (int i = 0; i < 16; ++i) big += header_reply('h', "X", std::string(65534, 'v'));
  milter.script['E'] = {big + r('a')};
  run = drive_once(message(), milter, Feed::whole);
  ASSERT_TRUE(run.result) << run.result.error();
  EXPECT_EQ(run.result->header_changes.size(), 16u);
  milter.script['E'] = {big + header_reply('h', "Y", "") + r('a')};
  run = drive_once(message(), milter, Feed::whole);
  EXPECT_EQ(run.summary, "error: the milter sent more than 1000 header changes or 1048576 bytes of them");
}

// ---------------------------------------------------------------------------
// SKIP and PROGRESS

TEST(MilterSession, SkipStopsTheStepsOfItsKind) {
  MilterMessage m = message();
  m.content = "A: 1\r\nB: 2\r\nC: 3\r\n\r\n" + std::string(200000, 'x');
  Transcript run = drive(m, FakeMilter{});
  EXPECT_EQ(run.commands, "O DC C H DM M DR R DR R DT T L L L DN N B B B B DE E Q");
  FakeMilter milter;
  milter.script['B'] = {r('c'), r('s')};
  EXPECT_EQ(drive(m, milter).commands, "O DC C H DM M DR R DR R DT T L L L DN N B B DE E Q");
  milter.script = {{'L', {r('s')}}};
  EXPECT_EQ(drive(m, milter).commands, "O DC C H DM M DR R DR R DT T L DN N B B B B DE E Q");
  milter.script = {{'R', {r('s')}}};
  EXPECT_EQ(drive(m, milter).commands, "O DC C H DM M DR R DT T L L L DN N B B B B DE E Q");
  // Elsewhere it is a continue.
  milter.script = {{'C', {r('s')}}, {'N', {r('s')}}};
  run = drive(m, milter);
  EXPECT_EQ(run.commands, "O DC C H DM M DR R DR R DT T L L L DN N B B B B DE E Q");
  EXPECT_EQ(run.summary, "accept");
}

TEST(MilterSession, ProgressIsCountedAndOtherwiseIgnored) {
  FakeMilter milter;
  milter.script['C'] = {r('p') + r('p') + r('c')};
  milter.script['E'] = {r('p') + header_reply('h', "X-A", "1") + r('p') + r('a')};
  const Transcript run = drive(message(), milter);
  EXPECT_EQ(run.commands, kFull);
  EXPECT_EQ(run.summary, "accept [add 0 X-A:\" 1\"]");
  EXPECT_EQ(run.progress, 4u);
}

// ---------------------------------------------------------------------------
// Negotiation

TEST(MilterSession, NegotiationNotesAndMasks) {
  FakeMilter milter;
  milter.actions = smfif::kAddHeaders | smfif::kChangeBody | smfif::kAddRecipients;
  milter.protocol = smfip::kRecipientRejected | smfip::kNoHelo | 0x10000000;
  const Transcript run = drive(message(), milter);
  EXPECT_EQ(run.commands, "O DC C DM M DR R DR R DT T L L L DN N B DE E Q");
  EXPECT_EQ(run.summary,
            "accept {the milter asked for actions we did not offer (0x00000006); such replies are ignored} "
            "{the milter set protocol bits we did not offer (0x10000800); ignored}");
  EXPECT_EQ(run.protocol, smfip::kNoHelo);
}

TEST(MilterSession, NegotiationErrors) {
  FakeMilter milter;
  milter.version = 7;
  Transcript run = drive(message(), milter);
  EXPECT_EQ(run.commands, "O");
  EXPECT_EQ(run.summary, "error: the milter speaks protocol version 7; we speak 2 to 6");
  milter.version = 1;
  EXPECT_EQ(drive(message(), milter).summary, "error: the milter speaks protocol version 1; we speak 2 to 6");
  milter.negotiation_reply = r('c');
  EXPECT_EQ(drive(message(), milter).summary,
            "error: expected the reply to SMFIC_OPTNEG, got SMFIR_CONTINUE");
  milter.negotiation_reply = r('O', "\0\0\0\x06"s);
  EXPECT_EQ(
      drive(message(), milter).summary,
      "error: bad reply to SMFIC_OPTNEG: SMFIC_OPTNEG reply of 4 bytes, shorter than version, actions and "
      "protocol (12)");
}

// ---------------------------------------------------------------------------
// Protocol errors: the conversation ends at once, nothing more is sent.

TEST(MilterSession, ProtocolErrors) {
  const struct {
    char at;
    std::string reply;
    const char* commands;
    const char* summary;
  } cases[] = {
      {'C', header_reply('h', "X", "v"), "O DC C",
       "error: unexpected SMFIR_ADDHEADER in reply to SMFIC_CONNECT (modifications may come only in reply to "
       "SMFIC_BODYEOB)"},
      {'B', r('b', "x"), "O DC C H DM M DR R DR R DT T L L L DN N B",
       "error: unexpected SMFIR_REPLBODY in reply to SMFIC_BODY (modifications may come only in reply to "
       "SMFIC_BODYEOB)"},
      {'M', r('z'), "O DC C H DM M", "error: bad reply to SMFIC_MAIL: unknown reply 0x7a"},
      {'H', r('O', u32(6) + u32(0) + u32(0)), "O DC C H",
       "error: unexpected SMFIC_OPTNEG in reply to SMFIC_HELO"},
      {'C', "", "O DC C", "error: connection closed before the reply to SMFIC_CONNECT"},
      {'C', "\0\0\0\x05y55"s, "O DC C",
       "error: connection closed in the middle of the reply to SMFIC_CONNECT"},
      {'E', header_reply('h', "X", "v"), kFullWithoutQuit,
       "error: connection closed before the reply to SMFIC_BODYEOB"},
      {'C', "\0\x02\0\0"s, "O DC C",
       "error: bad packet in the reply to SMFIC_CONNECT: packet length 131072 is over the limit of 69632 "
       "bytes"},
      {'R', r('y', "250 ok\0"s), "O DC C H DM M DR R",
       "error: bad reply to SMFIC_RCPT: malformed SMFIR_REPLYCODE \"250 ok\""},
      {'T', r('c', "x"), "O DC C H DM M DR R DR R DT T",
       "error: bad reply to SMFIC_DATA: SMFIR_CONTINUE with 1 bytes of data"},
      {'E', header_reply('h', "Bad Name", "v") + r('a'), kFullWithoutQuit,
       "error: SMFIR_ADDHEADER with an invalid header name \"Bad Name\""},
      {'E', header_reply('h', "", "v") + r('a'), kFullWithoutQuit,
       "error: SMFIR_ADDHEADER with an invalid header name \"\""},
      {'E', header_reply('h', "X", "a\nBcc: evil@example.com") + r('a'), kFullWithoutQuit,
       "error: SMFIR_ADDHEADER \"X\" with a line break not followed by white space"},
      {'E', indexed_header_reply('m', 1, "X", "a\r\n") + r('a'), kFullWithoutQuit,
       "error: SMFIR_CHGHEADER \"X\" with a line break not followed by white space"},
      {'E', indexed_header_reply('i', 1, "X", "a\rb") + r('a'), kFullWithoutQuit,
       "error: SMFIR_INSHEADER \"X\" with a bare CR in its value"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(1, c.at) + " " + quote_text(c.reply));
    FakeMilter milter;
    milter.script[c.at].push_back(c.reply);
    const Transcript run = drive(message(), milter);
    EXPECT_EQ(run.commands, c.commands);
    EXPECT_EQ(run.summary, c.summary);
  }
}

TEST(MilterSession, UnsendableMessagesAreErrorsBeforeOrAtTheirStep) {
  MilterMessage m = message();
  m.sender = "a\0b"s;
  Transcript run = drive(m, FakeMilter{});
  EXPECT_EQ(run.commands, "");
  EXPECT_EQ(run.summary, "error: not sent: the sender holds a NUL byte");
  m = message();
  m.recipients.push_back("x\0"s);
  EXPECT_EQ(drive(m, FakeMilter{}).summary, "error: not sent: a recipient holds a NUL byte");

  m = message();
  m.content = "Subject: a\0b\r\n\r\nbody\r\n"s;
  run = drive(m, FakeMilter{});
  EXPECT_EQ(run.commands, "O DC C H DM M DR R DR R DT T");
  EXPECT_EQ(run.summary, "error: not sent: header field \"Subject\" holds a NUL byte");
  // A milter that wants no headers never sees it.
  FakeMilter no_headers;
  no_headers.protocol = smfip::kNoHeaders;
  EXPECT_EQ(drive(m, no_headers).summary, "accept");

  // The longest header that fits one packet, and one byte more.
  m = message();
  const std::size_t fits = kMaxBodyChunk - std::string("X-Long").size() - 2;
  m.content = "X-Long: " + std::string(fits, 'v') + "\r\n\r\nbody\r\n";
  EXPECT_EQ(drive_once(m, FakeMilter{}, Feed::whole).summary, "accept");
  m.content = "X-Long: " + std::string(fits + 1, 'v') + "\r\n\r\nbody\r\n";
  EXPECT_EQ(drive_once(m, FakeMilter{}, Feed::whole).summary,
            "error: not sent: header field \"X-Long\" is longer than a milter packet allows (65535 bytes)");
  // Body bytes may be anything.
  m = message();
  m.content = "Subject: x\r\n\r\n\0\xff\r\n"s;
  EXPECT_EQ(drive(m, FakeMilter{}).find('B')->data, "\0\xff\r\n"s);
}

TEST(MilterSession, RandomRepliesEndInAResultOrAnErrorNeverACrash) {
  // Deterministic noise: at a random step, a random reply letter with random
  // data, or raw random bytes; the session must end either way (the driver
  // bounds the steps; ASan and UBSan watch the rest).
  const std::string letters = "+-24abcdefhilmpqrstyOz";
  for (unsigned seed = 0; seed < 300; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937 random(seed);
    const std::string commands = "CHMRTLNBE";
    FakeMilter milter;
    milter.protocol = random() % 2 ? smfip::kHeaderLeadingSpace : 0;
    std::string data(random() % 24, '\0');
    for (char& c : data) c = static_cast<char>(random() % 4 == 0 ? 0 : random() % 256);
    std::string reply = random() % 4 == 0 ? data : r(letters[random() % letters.size()], data);
    milter.script[commands[random() % commands.size()]].push_back(reply);
    const Transcript run = drive(message(), milter);
    EXPECT_FALSE(run.summary.empty());
  }
}

// ---------------------------------------------------------------------------
// split_header_block

std::vector<std::string> names(const HeaderBlock& block) {
  std::vector<std::string> out;
  for (const auto& field : block.fields) out.emplace_back(field.name);
  return out;
}

TEST(MilterHeaderBlock, Splits) {
  HeaderBlock b = split_header_block("A: 1\r\nB : 2\r\n  more\r\n\r\nbody\r\n");
  EXPECT_EQ(names(b), (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(b.fields[1].value, " 2\r\n  more");
  EXPECT_EQ(b.fields[1].raw, "B : 2\r\n  more\r\n");
  EXPECT_EQ(b.rest, "\r\nbody\r\n");
  EXPECT_EQ(b.body, "body\r\n");

  b = split_header_block("A: 1\nB: 2\n\nbody\n");  // bare LF
  EXPECT_EQ(names(b), (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(b.body, "body\n");

  b = split_header_block("A: 1\r\nB: 2");  // no body, no final line end
  EXPECT_EQ(b.fields[1].raw, "B: 2");
  EXPECT_EQ(b.rest, "");
  EXPECT_EQ(b.body, "");

  b = split_header_block("A: 1\r\nFrom someone\r\nB: 2\r\n");  // a line that is not a field starts the body
  EXPECT_EQ(names(b), (std::vector<std::string>{"A"}));
  EXPECT_EQ(b.body, "From someone\r\nB: 2\r\n");
  EXPECT_EQ(b.rest, b.body);

  b = split_header_block(" continued\r\nA: 1\r\n\r\n");
  EXPECT_TRUE(b.fields.empty());
  EXPECT_EQ(b.body, " continued\r\nA: 1\r\n\r\n");

  b = split_header_block("\r\nbody");
  EXPECT_TRUE(b.fields.empty());
  EXPECT_EQ(b.rest, "\r\nbody");
  EXPECT_EQ(b.body, "body");

  b = split_header_block("");
  EXPECT_TRUE(b.fields.empty());
  EXPECT_EQ(b.body, "");

  b = split_header_block("Bad name: x\r\n\r\n");
  EXPECT_TRUE(b.fields.empty());
  b = split_header_block("X-Empty:\r\n\r\n");
  EXPECT_EQ(b.fields[0].value, "");
}

// ---------------------------------------------------------------------------
// apply_header_changes

HeaderChange add(std::string name, std::string value) {
  return {HeaderChange::Kind::add, 0, std::move(name), std::move(value)};
}
HeaderChange insert(std::size_t index, std::string name, std::string value) {
  return {HeaderChange::Kind::insert, index, std::move(name), std::move(value)};
}
HeaderChange change(std::size_t index, std::string name, std::string value) {
  return {HeaderChange::Kind::change, index, std::move(name), std::move(value)};
}

const std::string kMessage =
    "Received: one\r\n"
    "Subject: hi\r\n"
    "X-Tag: a\r\n"
    "x-tag: b\r\n"
    "  folded\r\n"
    "\r\n"
    "body line\r\n";

TEST(MilterApplyHeaderChanges, AddAppendsAtTheEndOfTheHeaderBlock) {
  EXPECT_EQ(apply_header_changes(kMessage, {add("X-Virus-Scanned", " ClamAV"), add("X-Second", " 2")}),
            "Received: one\r\nSubject: hi\r\nX-Tag: a\r\nx-tag: b\r\n  folded\r\n"
            "X-Virus-Scanned: ClamAV\r\nX-Second: 2\r\n\r\nbody line\r\n");
  EXPECT_EQ(apply_header_changes(kMessage, {}), kMessage);
}

TEST(MilterApplyHeaderChanges, InsertAtIndex) {
  EXPECT_EQ(apply_header_changes(kMessage, {insert(0, "DKIM-Signature", " v=1;\r\n\tb=x")}),
            "DKIM-Signature: v=1;\r\n\tb=x\r\n" + kMessage);
  EXPECT_EQ(
      apply_header_changes(kMessage, {insert(2, "X-Mid", " m")}),
      "Received: one\r\nSubject: hi\r\nX-Mid: m\r\nX-Tag: a\r\nx-tag: b\r\n  folded\r\n\r\nbody line\r\n");
  EXPECT_EQ(apply_header_changes(kMessage, {insert(99, "X-End", " e")}),
            apply_header_changes(kMessage, {add("X-End", " e")}));
}

TEST(MilterApplyHeaderChanges, ChangeAndDeleteByOccurrence) {
  // The second X-Tag (names compared ignoring case), folded lines and all.
  EXPECT_EQ(apply_header_changes(kMessage, {change(2, "X-Tag", " new")}),
            "Received: one\r\nSubject: hi\r\nX-Tag: a\r\nX-Tag: new\r\n\r\nbody line\r\n");
  EXPECT_EQ(apply_header_changes(kMessage, {change(1, "x-TAG", "")}),
            "Received: one\r\nSubject: hi\r\nx-tag: b\r\n  folded\r\n\r\nbody line\r\n");
  // Index 0 is read as 1.
  EXPECT_EQ(apply_header_changes(kMessage, {change(0, "Subject", " changed")}),
            "Received: one\r\nSubject: changed\r\nX-Tag: a\r\nx-tag: b\r\n  folded\r\n\r\nbody line\r\n");
  // No such field: a value is added (smfi_chgheader), a deletion does nothing.
  EXPECT_EQ(apply_header_changes(kMessage, {change(3, "X-Tag", " third")}),
            apply_header_changes(kMessage, {add("X-Tag", " third")}));
  EXPECT_EQ(apply_header_changes(kMessage, {change(1, "X-Missing", "")}), kMessage);
  // Changes apply in order: the added field counts for the next one.
  EXPECT_EQ(apply_header_changes(kMessage, {add("X-New", " 1"), change(1, "X-New", " 2")}),
            apply_header_changes(kMessage, {add("X-New", " 2")}));
}

TEST(MilterApplyHeaderChanges, ValuesCannotStartANewField) {
  EXPECT_EQ(apply_header_changes("A: 1\r\n\r\nb", {add("X", " one\ntwo\r\n\tthree\n")}),
            "A: 1\r\nX: one\r\n two\r\n\tthree\r\n \r\n\r\nb");
}

TEST(MilterApplyHeaderChanges, OddMessages) {
  // Headers only, no line end at the end.
  EXPECT_EQ(apply_header_changes("Subject: x", {add("X", " y")}), "Subject: x\r\nX: y\r\n");
  // No header block at all.
  EXPECT_EQ(apply_header_changes("\r\nbody", {add("X", " y")}), "X: y\r\n\r\nbody");
  EXPECT_EQ(apply_header_changes("", {add("X", " y")}), "X: y\r\n");
  // Bare LF messages keep their lines; the new field has CRLF.
  EXPECT_EQ(apply_header_changes("A: 1\n\nbody\n", {insert(0, "X", " y")}), "X: y\r\nA: 1\n\nbody\n");
}

}  // namespace
}  // namespace mxgate::milter
