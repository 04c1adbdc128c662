// The milter wire format (src/milter/codec.hpp), no socket: every encoder
// byte-exact against hand-written packets (lengths written out, not
// computed), the packet decoder ground over a multi-packet stream at every
// split into two and three pieces and byte by byte (after Beast's
// parsegrind), its limit at kMaxPacketLength and one past it at every split
// (failgrind), and every reply the decoder knows, with its exact errors.
#include "milter/codec.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace mxgate::milter {
namespace {

using namespace std::string_literals;

// ---------------------------------------------------------------------------
// Encoders

TEST(MilterEncode, OptionNegotiation) {
  EXPECT_EQ(encode_option_negotiation(6, 0x31, 0x1ff7ff),
            "\0\0\0\x0d"
            "O"
            "\0\0\0\x06"
            "\0\0\0\x31"
            "\0\x1f\xf7\xff"s);
  EXPECT_EQ(encode_option_negotiation(0x01020304, 0xa0b0c0d0, 0xffffffff),
            "\0\0\0\x0dO\x01\x02\x03\x04\xa0\xb0\xc0\xd0\xff\xff\xff\xff"s);
}

TEST(MilterEncode, Macros) {
  EXPECT_EQ(encode_macros('C', {{"j", "mx.example"}, {"{daemon_name}", "mxgate"}}),
            "\0\0\0\x24"
            "DC"
            "j\0mx.example\0"
            "{daemon_name}\0mxgate\0"s);
  EXPECT_EQ(encode_macros('M', {{"i", "ABC123"}, {"{mail_addr}", ""}}),
            "\0\0\0\x18"
            "DM"
            "i\0ABC123\0"
            "{mail_addr}\0\0"s);
  EXPECT_EQ(encode_macros('E', {}),
            "\0\0\0\x02"
            "DE"s);
}

TEST(MilterEncode, Connect) {
  EXPECT_EQ(encode_connect("client.example", '4', 2525, "192.0.2.1"),
            "\0\0\0\x1d"
            "C"
            "client.example\0"
            "4"
            "\x09\xdd"
            "192.0.2.1\0"s);
  EXPECT_EQ(encode_connect("[2001:db8::1]", '6', 65535, "2001:db8::1"),
            "\0\0\0\x1e"
            "C"
            "[2001:db8::1]\0"
            "6"
            "\xff\xff"
            "2001:db8::1\0"s);
  EXPECT_EQ(encode_connect("localhost", 'L', 0, "/run/s"),
            "\0\0\0\x15"
            "C"
            "localhost\0"
            "L"
            "\0\0"
            "/run/s\0"s);
  // Unknown: nothing after the family.
  EXPECT_EQ(encode_connect("unknown", 'U', 25, "ignored"),
            "\0\0\0\x0a"
            "C"
            "unknown\0"
            "U"s);
}

TEST(MilterEncode, HeloMailRecipient) {
  EXPECT_EQ(encode_helo("helo.example"),
            "\0\0\0\x0e"
            "Hhelo.example\0"s);
  EXPECT_EQ(encode_mail("a@example.com"),
            "\0\0\0\x11"
            "M<a@example.com>\0"s);
  EXPECT_EQ(encode_mail(""),
            "\0\0\0\x04"
            "M<>\0"s);
  EXPECT_EQ(encode_mail("a@b", {"SIZE=100", "BODY=8BITMIME"}),
            "\0\0\0\x1e"
            "M<a@b>\0"
            "SIZE=100\0"
            "BODY=8BITMIME\0"s);
  EXPECT_EQ(encode_recipient("b@example.org"),
            "\0\0\0\x11"
            "R<b@example.org>\0"s);
  EXPECT_EQ(encode_recipient("c@d", {"NOTIFY=NEVER"}),
            "\0\0\0\x14"
            "R<c@d>\0"
            "NOTIFY=NEVER\0"s);
}

TEST(MilterEncode, HeaderAndBody) {
  EXPECT_EQ(encode_header("Subject", " hi"),
            "\0\0\0\x0d"
            "LSubject\0 hi\0"s);
  EXPECT_EQ(encode_header("X-Folded", "a\n\tb"),
            "\0\0\0\x0f"
            "LX-Folded\0a\n\tb\0"s);
  EXPECT_EQ(encode_header("X-Empty", ""),
            "\0\0\0\x0a"
            "LX-Empty\0\0"s);
  EXPECT_EQ(encode_body("Hello\r\n"),
            "\0\0\0\x08"
            "BHello\r\n"s);
  EXPECT_EQ(encode_body(""),
            "\0\0\0\x01"
            "B"s);
  // A full chunk: 65535 bytes of data, length 65536.
  const std::string chunk(kMaxBodyChunk, 'x');
  EXPECT_EQ(encode_body(chunk),
            "\0\x01\0\0"
            "B"s +
                chunk);
  // Bytes of any value pass unchanged.
  EXPECT_EQ(encode_body("\0\xff\r"s),
            "\0\0\0\x04"
            "B\0\xff\r"s);
}

TEST(MilterEncode, CommandsWithoutData) {
  EXPECT_EQ(encode_data(), "\0\0\0\x01T"s);
  EXPECT_EQ(encode_end_of_headers(), "\0\0\0\x01N"s);
  EXPECT_EQ(encode_end_of_body(),
            "\0\0\0\x01"
            "E"s);
  EXPECT_EQ(encode_abort(),
            "\0\0\0\x01"
            "A"s);
  EXPECT_EQ(encode_quit(), "\0\0\0\x01Q"s);
  EXPECT_EQ(encode_packet('Z', "xy"), "\0\0\0\x03Zxy"s);
}

TEST(MilterEncode, LetterValuesAreThoseOfMfdef) {
  // mfdef.h, byte for byte.
  EXPECT_EQ(std::string() + smfic::kAbort + smfic::kBody + smfic::kConnect + smfic::kMacro +
                smfic::kEndOfBody + smfic::kHelo + smfic::kQuitNewConnection + smfic::kHeader + smfic::kMail +
                smfic::kEndOfHeaders + smfic::kOptionNegotiation + smfic::kQuit + smfic::kRecipient +
                smfic::kData + smfic::kUnknown,
            "ABCDEHKLMNOQRTU");
  EXPECT_EQ(std::string() + smfir::kAddRecipient + smfir::kDeleteRecipient + smfir::kAddRecipientWithArgs +
                smfir::kShutdown + smfir::kAccept + smfir::kReplaceBody + smfir::kContinue + smfir::kDiscard +
                smfir::kChangeFrom + smfir::kConnectionFailure + smfir::kAddHeader + smfir::kInsertHeader +
                smfir::kSetSymbolList + smfir::kChangeHeader + smfir::kProgress + smfir::kQuarantine +
                smfir::kReject + smfir::kSkip + smfir::kTempfail + smfir::kReplyCode,
            "+-24abcdefhilmpqrsty");
  EXPECT_EQ(smfip::kNoReplyHeader, 0x80u);
  EXPECT_EQ(smfip::kSkip, 0x400u);
  EXPECT_EQ(smfip::kNoReplyConnect, 0x1000u);
  EXPECT_EQ(smfip::kNoReplyBody, 0x80000u);
  EXPECT_EQ(smfip::kHeaderLeadingSpace, 0x100000u);
  EXPECT_EQ(smfif::kQuarantine, 0x20u);
  EXPECT_EQ(smfif::kSetSymbolList, 0x100u);
}

TEST(MilterNames, CommandsRepliesAndQuoting) {
  EXPECT_EQ(command_name('C'), "SMFIC_CONNECT");
  EXPECT_EQ(command_name('E'), "SMFIC_BODYEOB");
  EXPECT_EQ(command_name('\x07'), "0x07");
  EXPECT_EQ(reply_name('y'), "SMFIR_REPLYCODE");
  EXPECT_EQ(reply_name('2'), "SMFIR_ADDRCPT_PAR");
  EXPECT_EQ(reply_name('\xfe'), "0xfe");
  EXPECT_EQ(quote_text("a\"b\\c\r\n\x01"), "\"a\\\"b\\\\c\\x0d\\x0a\\x01\"");
  EXPECT_EQ(quote_text(std::string(kMaxQuoted + 1, 'x')), "\"" + std::string(kMaxQuoted, 'x') + "\"...");
}

// ---------------------------------------------------------------------------
// PacketDecoder

struct Decoded {
  std::vector<Packet> packets;
  std::string error;  // when the stream failed
};

bool operator==(const Decoded& a, const Decoded& b) { return a.packets == b.packets && a.error == b.error; }
std::ostream& operator<<(std::ostream& os, const Decoded& d) {
  os << "{";
  for (const Packet& p : d.packets) os << reply_name(p.command) << ":" << quote_text(p.data) << " ";
  return os << "error=" << quote_text(d.error) << "}";
}

// Feeds in cut at the ascending offsets, taking every packet as it is
// complete (as the session does), then EOF if eof.
Decoded decode_pieces(std::string_view in, const std::vector<std::size_t>& cuts, bool eof) {
  PacketDecoder decoder;
  Decoded out;
  std::size_t start = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(in.size());
  for (const std::size_t end : ends) {
    std::string_view piece = in.substr(start, end - start);
    start = end;
    while (!piece.empty() && decoder.state() != PacketDecoder::State::failed) {
      const std::size_t used = decoder.feed(piece);
      EXPECT_LE(used, piece.size());
      piece.remove_prefix(used);
      if (decoder.state() == PacketDecoder::State::packet) {
        out.packets.push_back(decoder.take());
      } else if (decoder.state() == PacketDecoder::State::need_more) {
        EXPECT_TRUE(piece.empty()) << "need_more with bytes left";
      }
    }
  }
  if (eof) decoder.feed_eof();
  if (decoder.state() == PacketDecoder::State::failed) out.error = decoder.error();
  return out;
}

void grind(std::string_view in, bool eof, const Decoded& expected) {
  ASSERT_EQ(decode_pieces(in, {}, eof), expected) << "one shot";
  for (std::size_t i = 0; i <= in.size(); ++i) {
    ASSERT_EQ(decode_pieces(in, {i}, eof), expected) << "split at " << i;
    if (in.size() <= 120) {
      for (std::size_t j = i; j <= in.size(); ++j)
        ASSERT_EQ(decode_pieces(in, {i, j}, eof), expected) << i << "," << j;
    }
  }
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < in.size(); ++i) every.push_back(i);
  ASSERT_EQ(decode_pieces(in, every, eof), expected) << "byte by byte";
}

TEST(MilterPacketDecoder, MultiPacketStreamAtEverySplit) {
  // Progress, a negotiation reply, a header ('h' + "X-Virus-Status\0" (15) +
  // "Clean\0" (6) = 22 = 0x16), accept.
  const std::string good =
      "\0\0\0\x01p"s
      "\0\0\0\x0dO\0\0\0\x06\0\0\0\x11\0\x10\x07\x02"s
      "\0\0\0\x16h"
      "X-Virus-Status\0Clean\0"s
      "\0\0\0\x01"
      "a"s;
  const Decoded expected{{Packet{'p', ""}, Packet{'O', "\0\0\0\x06\0\0\0\x11\0\x10\x07\x02"s},
                          Packet{'h', "X-Virus-Status\0Clean\0"s}, Packet{'a', ""}},
                         ""};
  grind(good, false, expected);
  // EOF after whole packets: nothing pending, no error.
  grind(good, true, Decoded{expected.packets, "connection closed before the reply"});
}

TEST(MilterPacketDecoder, EofBeforeAndInsideAPacket) {
  EXPECT_EQ(decode_pieces("", {}, true), (Decoded{{}, "connection closed before the reply"}));
  for (const std::string& partial : {"\0"s, "\0\0\0"s, "\0\0\0\x02"s, "\0\0\0\x03y5"s}) {
    SCOPED_TRACE(quote_text(partial));
    grind(partial, true, Decoded{{}, "connection closed in the middle of a packet"});
  }
  // Without EOF a partial packet is simply not done.
  EXPECT_EQ(decode_pieces("\0\0\0\x03y5"s, {}, false), (Decoded{{}, ""}));
}

TEST(MilterPacketDecoder, LengthZeroIsAnError) {
  grind(
      "\0\0\0\x01"
      "c\0\0\0\0c"s,
      false, Decoded{{Packet{'c', ""}}, "packet length 0"});
}

TEST(MilterPacketDecoder, LimitAndOnePast) {
  ASSERT_EQ(kMaxPacketLength, 69632u);
  // Exactly the limit: a body replacement of 69631 bytes.
  const std::string data(kMaxPacketLength - 1, 'b');
  const std::string at_limit = "\0\x01\x10\0"s + "b" + data +
                               "\0\0\0\x01"
                               "c"s;
  const Decoded expected{{Packet{'b', data}, Packet{'c', ""}}, ""};
  EXPECT_EQ(decode_pieces(at_limit, {}, false), expected);
  EXPECT_EQ(decode_pieces(at_limit, {2}, false), expected);
  EXPECT_EQ(decode_pieces(at_limit, {5, 40000}, false), expected);
  // One past: refused as soon as the length is read, at every split of it.
  const std::string past =
      "\0\x01\x10\x01"
      "b"s +
      std::string(64, 'b');
  grind(past, false, Decoded{{}, "packet length 69633 is over the limit of 69632 bytes"});
  grind("\xff\xff\xff\xff"s, false, Decoded{{}, "packet length 4294967295 is over the limit of 69632 bytes"});
}

TEST(MilterPacketDecoder, NothingIsConsumedUntilThePacketIsTaken) {
  PacketDecoder decoder;
  const std::string two =
      "\0\0\0\x01"
      "c\0\0\0\x01"
      "a"s;
  EXPECT_EQ(decoder.feed(two), 5u);
  ASSERT_EQ(decoder.state(), PacketDecoder::State::packet);
  EXPECT_EQ(decoder.feed(std::string_view(two).substr(5)), 0u);
  EXPECT_EQ(decoder.take().command, 'c');
  EXPECT_FALSE(decoder.mid_packet());
  EXPECT_EQ(decoder.feed(std::string_view(two).substr(5)), 5u);
  EXPECT_EQ(decoder.take().command, 'a');
}

// ---------------------------------------------------------------------------
// decode_reply

Reply decoded(char command, const std::string& data) {
  auto reply = decode_reply(Packet{command, data});
  EXPECT_TRUE(reply) << reply.error();
  return reply ? *reply : Reply{};
}

std::string error_of(char command, const std::string& data) {
  auto reply = decode_reply(Packet{command, data});
  EXPECT_FALSE(reply) << "decoded as kind " << static_cast<int>(reply ? reply->kind : Reply::Kind{});
  return reply ? std::string() : reply.error();
}

TEST(MilterReplies, Negotiation) {
  Reply r = decoded('O', "\0\0\0\x06\0\0\0\x31\0\x10\x07\x02"s);
  EXPECT_EQ(r.kind, Reply::Kind::negotiation);
  EXPECT_EQ(r.version, 6u);
  EXPECT_EQ(r.actions, 0x31u);
  EXPECT_EQ(r.protocol, 0x100702u);
  // Macro lists after the three numbers (SMFIF_SETSYMLIST) are ignored.
  r = decoded('O', "\0\0\0\x06\0\0\0\x01\0\0\0\0\0\0\0\x02{x}\0"s);
  EXPECT_EQ(r.version, 6u);
  EXPECT_EQ(error_of('O', "\0\0\0\x06\0\0\0\x01\0\0\0"s),
            "SMFIC_OPTNEG reply of 11 bytes, shorter than version, actions and protocol (12)");
}

TEST(MilterReplies, RepliesWithoutData) {
  const std::pair<char, Reply::Kind> cases[] = {
      {'c', Reply::Kind::continue_},          {'a', Reply::Kind::accept},   {'r', Reply::Kind::reject},
      {'t', Reply::Kind::tempfail},           {'d', Reply::Kind::discard},  {'4', Reply::Kind::shutdown},
      {'f', Reply::Kind::connection_failure}, {'p', Reply::Kind::progress}, {'s', Reply::Kind::skip},
  };
  for (const auto& [letter, kind] : cases) {
    SCOPED_TRACE(letter);
    EXPECT_EQ(decoded(letter, "").kind, kind);
    EXPECT_EQ(error_of(letter, "xyz"), reply_name(letter) + " with 3 bytes of data");
  }
}

TEST(MilterReplies, ReplyCode) {
  Reply r = decoded('y', "550 5.7.1 Virus found\0"s);
  EXPECT_EQ(r.kind, Reply::Kind::reply_code);
  EXPECT_EQ(r.text, "550 5.7.1 Virus found");
  // The last string's NUL may be missing.
  EXPECT_EQ(decoded('y', "451 4.7.1 Later").text, "451 4.7.1 Later");
  // "%%" is "%", a single "%" is dropped (Postfix).
  EXPECT_EQ(decoded('y', "550 5.7.1 100%% spam, 50% sure\0"s).text, "550 5.7.1 100% spam, 50 sure");
  // Multi-line (smfi_setmlreply).
  EXPECT_EQ(decoded('y', "550-5.7.1 first\r\n550 5.7.1 second\0"s).text,
            "550-5.7.1 first\r\n550 5.7.1 second");
  EXPECT_EQ(decoded('y', "421\0"s).text, "421");
  EXPECT_EQ(decoded('y', "550 5.7.1 tab\there\0"s).text, "550 5.7.1 tab\there");
  for (const std::string& bad :
       {"250 2.0.0 ok"s, "55 short"s, "5x0 x"s, "550-5.7.1 dangling"s, "550x"s, "550 4.7.1 class mismatch"s,
        "550-a\r\n551 b"s, "550 a\r\n"s, "550 a\nb"s, "550 a\rb"s, "550 bell\x07"s, ""s,
        "550 a\0"s
        "b\0"s}) {
    SCOPED_TRACE(quote_text(bad));
    const std::string error = error_of('y', bad);
    EXPECT_TRUE(error.starts_with("malformed SMFIR_REPLYCODE") ||
                error.find("unexpected") != std::string::npos)
        << error;
  }
  EXPECT_EQ(error_of('y', "250 ok\0"s), "malformed SMFIR_REPLYCODE \"250 ok\"");
  EXPECT_EQ(error_of('y', "550 a\0b\0"s), "SMFIR_REPLYCODE followed by 2 unexpected bytes");
}

TEST(MilterReplies, QuarantineAndRecipientsAndSender) {
  Reply r = decoded('q', "virus found\0"s);
  EXPECT_EQ(r.kind, Reply::Kind::quarantine);
  EXPECT_EQ(r.text, "virus found");
  r = decoded('+', "<new@example.org>\0"s);
  EXPECT_EQ(r.kind, Reply::Kind::add_recipient);
  EXPECT_EQ(r.text, "<new@example.org>");
  r = decoded('-', "<old@example.org>\0"s);
  EXPECT_EQ(r.kind, Reply::Kind::delete_recipient);
  r = decoded('2', "<x@y>\0NOTIFY=NEVER\0"s);
  EXPECT_EQ(r.kind, Reply::Kind::add_recipient_args);
  EXPECT_EQ(r.text, "<x@y>");
  EXPECT_EQ(r.args, "NOTIFY=NEVER");
  r = decoded('e', "<s@y>\0"s);
  EXPECT_EQ(r.kind, Reply::Kind::change_from);
  EXPECT_EQ(r.text, "<s@y>");
  EXPECT_EQ(r.args, "");
  r = decoded('e', "<s@y>\0SIZE=1\0"s);
  EXPECT_EQ(r.args, "SIZE=1");
  EXPECT_EQ(error_of('+', "<a>\0<b>\0"s), "SMFIR_ADDRCPT followed by 4 unexpected bytes");
  EXPECT_EQ(error_of('e', "<a>\0b\0c\0"s), "SMFIR_CHGFROM followed by 2 unexpected bytes");
}

TEST(MilterReplies, Headers) {
  Reply r = decoded('h', "X-Virus-Scanned\0ClamAV\0"s);
  EXPECT_EQ(r.kind, Reply::Kind::add_header);
  EXPECT_EQ(r.name, "X-Virus-Scanned");
  EXPECT_EQ(r.text, "ClamAV");
  r = decoded('i', "\0\0\0\0DKIM-Signature\0 v=1;\n\tb=x\0"s);
  EXPECT_EQ(r.kind, Reply::Kind::insert_header);
  EXPECT_EQ(r.index, 0u);
  EXPECT_EQ(r.name, "DKIM-Signature");
  EXPECT_EQ(r.text, " v=1;\n\tb=x");
  r = decoded('m', "\0\0\x01\x02Subject\0\0"s);
  EXPECT_EQ(r.kind, Reply::Kind::change_header);
  EXPECT_EQ(r.index, 0x102u);
  EXPECT_EQ(r.name, "Subject");
  EXPECT_EQ(r.text, "");
  // The value's NUL may be missing; the name's may not.
  EXPECT_EQ(decoded('h', "X\0v"s).text, "v");
  EXPECT_EQ(error_of('h', "X-No-Nul"), "SMFIR_ADDHEADER: missing NUL after the header name");
  EXPECT_EQ(error_of('h', ""), "SMFIR_ADDHEADER: missing NUL after the header name");
  EXPECT_EQ(error_of('i', "\0\0\0"s), "SMFIR_INSHEADER: too short for the index");
  EXPECT_EQ(error_of('m',
                     "\0\0\0\x01"
                     "a\0b\0c"s),
            "SMFIR_CHGHEADER followed by 1 unexpected bytes");
}

TEST(MilterReplies, BodyReplacementIsRawBytes) {
  Reply r = decoded('b', "new body\r\n\0with NUL"s);
  EXPECT_EQ(r.kind, Reply::Kind::replace_body);
  EXPECT_EQ(r.text, "new body\r\n\0with NUL"s);
}

TEST(MilterReplies, UnknownReplies) {
  EXPECT_EQ(error_of('z', ""), "unknown reply 0x7a");
  EXPECT_EQ(error_of('l', "x"), "unknown reply SMFIR_SETSYMLIST");
  EXPECT_EQ(error_of('C', ""), "unknown reply 0x43");
}

}  // namespace
}  // namespace mxgate::milter
