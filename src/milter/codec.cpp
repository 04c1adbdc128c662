// The milter wire format (src/milter/codec.hpp): names, encoders, the packet
// decoder and the reply decoder.
#include "milter/codec.hpp"

#include "util/quoted.hpp"

#include <algorithm>
#include <cstring>

namespace mxgate::milter {
namespace {

void put_u32(std::string& out, std::uint32_t value) {
  out += static_cast<char>(value >> 24);
  out += static_cast<char>(value >> 16);
  out += static_cast<char>(value >> 8);
  out += static_cast<char>(value);
}

std::uint32_t get_u32(std::string_view bytes) {
  return (std::uint32_t{static_cast<unsigned char>(bytes[0])} << 24) |
         (std::uint32_t{static_cast<unsigned char>(bytes[1])} << 16) |
         (std::uint32_t{static_cast<unsigned char>(bytes[2])} << 8) |
         std::uint32_t{static_cast<unsigned char>(bytes[3])};
}

void put_string(std::string& out, std::string_view text) {
  out += text;
  out += '\0';
}

std::string hex_byte(char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto u = static_cast<unsigned char>(c);
  return std::string("0x") + kHex[u >> 4] + kHex[u & 0xf];
}

std::string envelope_packet(char command, std::string_view address, const std::vector<std::string>& args) {
  std::string data;
  data += '<';
  data += address;
  data += '>';
  data += '\0';
  for (const std::string& arg : args) put_string(data, arg);
  return encode_packet(command, data);
}

// Reads NUL-terminated strings off the front of a reply's data.
class Fields {
 public:
  Fields(std::string_view data, char reply) : rest_(data), reply_(reply) {}

  Result<std::uint32_t> u32(std::string_view what) {
    if (rest_.size() < 4) return make_error(reply_name(reply_) + ": too short for the " + std::string(what));
    const std::uint32_t value = get_u32(rest_);
    rest_.remove_prefix(4);
    return value;
  }

  // A string ending at a NUL, or (when last) at the end of the data.
  Result<std::string> string(std::string_view what, bool last) {
    const std::size_t nul = rest_.find('\0');
    if (nul == std::string_view::npos) {
      if (!last) return make_error(reply_name(reply_) + ": missing NUL after the " + std::string(what));
      std::string value(rest_);
      rest_ = {};
      return value;
    }
    std::string value(rest_.substr(0, nul));
    rest_.remove_prefix(nul + 1);
    return value;
  }

  bool empty() const { return rest_.empty(); }
  std::size_t left() const { return rest_.size(); }

  Result<void> end() const {
    if (!rest_.empty())
      return make_error(reply_name(reply_) + " followed by " + std::to_string(rest_.size()) +
                        " unexpected bytes");
    return {};
  }

 private:
  std::string_view rest_;
  char reply_;
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// "%%" -> "%", a single "%" dropped (Sendmail's format-string escaping undone,
// as Postfix does).
std::string undouble_percent(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
    } else if (i + 1 < text.size()) {
      out += text[++i];
    }
  }
  return out;
}

bool valid_reply_code_text(std::string_view text) {
  if (text.size() < 3) return false;
  const std::string_view code = text.substr(0, 3);
  if ((code[0] != '4' && code[0] != '5') || !is_digit(code[1]) || !is_digit(code[2])) return false;
  std::size_t start = 0;
  for (;;) {
    const std::size_t crlf = text.find("\r\n", start);
    const bool last = crlf == std::string_view::npos;
    const std::string_view line = text.substr(start, last ? std::string_view::npos : crlf - start);
    if (line.size() < 3 || line.substr(0, 3) != code) return false;
    if (last ? (line.size() > 3 && line[3] != ' ') : (line.size() < 4 || line[3] != '-')) return false;
    if (line.size() > 4 && is_digit(line[4]) && line[4] != code[0]) return false;
    for (const char c : line) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
    }
    if (last) return true;
    start = crlf + 2;
  }
}

}  // namespace

std::string command_name(char command) {
  switch (command) {
    case smfic::kAbort:
      return "SMFIC_ABORT";
    case smfic::kBody:
      return "SMFIC_BODY";
    case smfic::kConnect:
      return "SMFIC_CONNECT";
    case smfic::kMacro:
      return "SMFIC_MACRO";
    case smfic::kEndOfBody:
      return "SMFIC_BODYEOB";
    case smfic::kHelo:
      return "SMFIC_HELO";
    case smfic::kQuitNewConnection:
      return "SMFIC_QUIT_NC";
    case smfic::kHeader:
      return "SMFIC_HEADER";
    case smfic::kMail:
      return "SMFIC_MAIL";
    case smfic::kEndOfHeaders:
      return "SMFIC_EOH";
    case smfic::kOptionNegotiation:
      return "SMFIC_OPTNEG";
    case smfic::kQuit:
      return "SMFIC_QUIT";
    case smfic::kRecipient:
      return "SMFIC_RCPT";
    case smfic::kData:
      return "SMFIC_DATA";
    case smfic::kUnknown:
      return "SMFIC_UNKNOWN";
    default:
      return hex_byte(command);
  }
}

std::string reply_name(char reply) {
  switch (reply) {
    case smfir::kAddRecipient:
      return "SMFIR_ADDRCPT";
    case smfir::kDeleteRecipient:
      return "SMFIR_DELRCPT";
    case smfir::kAddRecipientWithArgs:
      return "SMFIR_ADDRCPT_PAR";
    case smfir::kShutdown:
      return "SMFIR_SHUTDOWN";
    case smfir::kAccept:
      return "SMFIR_ACCEPT";
    case smfir::kReplaceBody:
      return "SMFIR_REPLBODY";
    case smfir::kContinue:
      return "SMFIR_CONTINUE";
    case smfir::kDiscard:
      return "SMFIR_DISCARD";
    case smfir::kChangeFrom:
      return "SMFIR_CHGFROM";
    case smfir::kConnectionFailure:
      return "SMFIR_CONN_FAIL";
    case smfir::kAddHeader:
      return "SMFIR_ADDHEADER";
    case smfir::kInsertHeader:
      return "SMFIR_INSHEADER";
    case smfir::kSetSymbolList:
      return "SMFIR_SETSYMLIST";
    case smfir::kChangeHeader:
      return "SMFIR_CHGHEADER";
    case smfir::kProgress:
      return "SMFIR_PROGRESS";
    case smfir::kQuarantine:
      return "SMFIR_QUARANTINE";
    case smfir::kReject:
      return "SMFIR_REJECT";
    case smfir::kSkip:
      return "SMFIR_SKIP";
    case smfir::kTempfail:
      return "SMFIR_TEMPFAIL";
    case smfir::kReplyCode:
      return "SMFIR_REPLYCODE";
    case smfir::kOptionNegotiation:
      return "SMFIC_OPTNEG";
    default:
      return hex_byte(reply);
  }
}

std::string quote_text(std::string_view text) { return quote_escaped(text); }

// ---------------------------------------------------------------------------
// Encoders

std::string encode_packet(char command, std::string_view data) {
  std::string out;
  out.reserve(5 + data.size());
  put_u32(out, static_cast<std::uint32_t>(data.size() + 1));
  out += command;
  out += data;
  return out;
}

std::string encode_option_negotiation(std::uint32_t version, std::uint32_t actions, std::uint32_t protocol) {
  std::string data;
  put_u32(data, version);
  put_u32(data, actions);
  put_u32(data, protocol);
  return encode_packet(smfic::kOptionNegotiation, data);
}

std::string encode_macros(char for_command, const Macros& macros) {
  std::string data(1, for_command);
  for (const auto& [name, value] : macros) {
    put_string(data, name);
    put_string(data, value);
  }
  return encode_packet(smfic::kMacro, data);
}

std::string encode_connect(std::string_view hostname, char family, std::uint16_t port,
                           std::string_view address) {
  std::string data;
  put_string(data, hostname);
  data += family;
  if (family != smfia::kUnknown) {
    data += static_cast<char>(port >> 8);
    data += static_cast<char>(port & 0xff);
    put_string(data, address);
  }
  return encode_packet(smfic::kConnect, data);
}

std::string encode_helo(std::string_view helo) {
  std::string data;
  put_string(data, helo);
  return encode_packet(smfic::kHelo, data);
}

std::string encode_mail(std::string_view sender, const std::vector<std::string>& esmtp_args) {
  return envelope_packet(smfic::kMail, sender, esmtp_args);
}

std::string encode_recipient(std::string_view recipient, const std::vector<std::string>& esmtp_args) {
  return envelope_packet(smfic::kRecipient, recipient, esmtp_args);
}

std::string encode_header(std::string_view name, std::string_view value) {
  std::string data;
  data.reserve(name.size() + value.size() + 2);
  put_string(data, name);
  put_string(data, value);
  return encode_packet(smfic::kHeader, data);
}

std::string encode_body(std::string_view chunk) { return encode_packet(smfic::kBody, chunk); }
std::string encode_data() { return encode_packet(smfic::kData, {}); }
std::string encode_end_of_headers() { return encode_packet(smfic::kEndOfHeaders, {}); }
std::string encode_end_of_body() { return encode_packet(smfic::kEndOfBody, {}); }
std::string encode_abort() { return encode_packet(smfic::kAbort, {}); }
std::string encode_quit() { return encode_packet(smfic::kQuit, {}); }

// ---------------------------------------------------------------------------
// The packet decoder

std::size_t PacketDecoder::feed(std::string_view bytes) {
  if (state_ != State::need_more) return 0;
  std::size_t used = 0;
  while (header_used_ < 4) {
    if (used == bytes.size()) return used;
    header_[header_used_++] = static_cast<unsigned char>(bytes[used++]);
    if (header_used_ < 4) continue;
    length_ = (std::uint32_t{header_[0]} << 24) | (std::uint32_t{header_[1]} << 16) |
              (std::uint32_t{header_[2]} << 8) | std::uint32_t{header_[3]};
    if (length_ == 0) {
      state_ = State::failed;
      error_ = "packet length 0";
      return used;
    }
    if (length_ > kMaxPacketLength) {
      state_ = State::failed;
      error_ = "packet length " + std::to_string(length_) + " is over the limit of " +
               std::to_string(kMaxPacketLength) + " bytes";
      return used;
    }
    packet_ = Packet{};
    packet_.data.reserve(length_ - 1);
  }
  // The command byte, then the data.
  if (!have_command_ && used < bytes.size()) {
    packet_.command = bytes[used++];
    have_command_ = true;
  }
  if (have_command_) {
    const std::size_t want = length_ - 1 - packet_.data.size();
    const std::size_t n = std::min(want, bytes.size() - used);
    packet_.data.append(bytes.substr(used, n));
    used += n;
    if (packet_.data.size() == length_ - 1) state_ = State::packet;
  }
  return used;
}

void PacketDecoder::feed_eof() {
  if (state_ != State::need_more) return;
  state_ = State::failed;
  error_ =
      mid_packet() ? "connection closed in the middle of a packet" : "connection closed before the reply";
}

Packet PacketDecoder::take() {
  Packet out = std::move(packet_);
  packet_ = Packet{};
  header_used_ = 0;
  have_command_ = false;
  length_ = 0;
  state_ = State::need_more;
  return out;
}

// ---------------------------------------------------------------------------
// Replies

Result<Reply> decode_reply(const Packet& packet) {
  const char c = packet.command;
  const std::string name = reply_name(c);
  Reply reply;
  Fields fields(packet.data, c);

  const auto no_data = [&](Reply::Kind kind) -> Result<Reply> {
    if (!packet.data.empty())
      return make_error(name + " with " + std::to_string(packet.data.size()) + " bytes of data");
    reply.kind = kind;
    return reply;
  };
  // One string, then nothing.
  const auto one_string = [&](Reply::Kind kind, std::string_view what) -> Result<Reply> {
    auto text = fields.string(what, true);
    if (!text) return Error{text.error()};
    if (auto end = fields.end(); !end) return Error{end.error()};
    reply.kind = kind;
    reply.text = std::move(*text);
    return reply;
  };
  // A string, then an optional string of arguments.
  const auto string_and_args = [&](Reply::Kind kind, std::string_view what) -> Result<Reply> {
    auto text = fields.string(what, true);
    if (!text) return Error{text.error()};
    if (!fields.empty()) {
      auto args = fields.string("ESMTP arguments", true);
      if (!args) return Error{args.error()};
      reply.args = std::move(*args);
    }
    if (auto end = fields.end(); !end) return Error{end.error()};
    reply.kind = kind;
    reply.text = std::move(*text);
    return reply;
  };
  // [index], name, value.
  const auto header = [&](Reply::Kind kind, bool indexed) -> Result<Reply> {
    if (indexed) {
      auto index = fields.u32("index");
      if (!index) return Error{index.error()};
      reply.index = *index;
    }
    auto header_name = fields.string("header name", false);
    if (!header_name) return Error{header_name.error()};
    auto value = fields.string("header value", true);
    if (!value) return Error{value.error()};
    if (auto end = fields.end(); !end) return Error{end.error()};
    reply.kind = kind;
    reply.name = std::move(*header_name);
    reply.text = std::move(*value);
    return reply;
  };

  switch (c) {
    case smfir::kOptionNegotiation: {
      if (packet.data.size() < 12)
        return make_error(name + " reply of " + std::to_string(packet.data.size()) +
                          " bytes, shorter than version, actions and protocol (12)");
      reply.kind = Reply::Kind::negotiation;
      reply.version = get_u32(packet.data);
      reply.actions = get_u32(std::string_view(packet.data).substr(4));
      reply.protocol = get_u32(std::string_view(packet.data).substr(8));
      return reply;
    }
    case smfir::kContinue:
      return no_data(Reply::Kind::continue_);
    case smfir::kAccept:
      return no_data(Reply::Kind::accept);
    case smfir::kReject:
      return no_data(Reply::Kind::reject);
    case smfir::kTempfail:
      return no_data(Reply::Kind::tempfail);
    case smfir::kDiscard:
      return no_data(Reply::Kind::discard);
    case smfir::kShutdown:
      return no_data(Reply::Kind::shutdown);
    case smfir::kConnectionFailure:
      return no_data(Reply::Kind::connection_failure);
    case smfir::kProgress:
      return no_data(Reply::Kind::progress);
    case smfir::kSkip:
      return no_data(Reply::Kind::skip);
    case smfir::kReplyCode: {
      auto decoded = one_string(Reply::Kind::reply_code, "reply text");
      if (!decoded) return decoded;
      std::string text = undouble_percent(decoded->text);
      if (!valid_reply_code_text(text))
        return make_error("malformed " + name + " " + quote_text(decoded->text));
      decoded->text = std::move(text);
      return decoded;
    }
    case smfir::kQuarantine:
      return one_string(Reply::Kind::quarantine, "reason");
    case smfir::kAddHeader:
      return header(Reply::Kind::add_header, false);
    case smfir::kInsertHeader:
      return header(Reply::Kind::insert_header, true);
    case smfir::kChangeHeader:
      return header(Reply::Kind::change_header, true);
    case smfir::kAddRecipient:
      return one_string(Reply::Kind::add_recipient, "recipient");
    case smfir::kDeleteRecipient:
      return one_string(Reply::Kind::delete_recipient, "recipient");
    case smfir::kAddRecipientWithArgs:
      return string_and_args(Reply::Kind::add_recipient_args, "recipient");
    case smfir::kChangeFrom:
      return string_and_args(Reply::Kind::change_from, "sender");
    case smfir::kReplaceBody:
      reply.kind = Reply::Kind::replace_body;
      reply.text = packet.data;
      return reply;
    default:
      return make_error("unknown reply " + name);
  }
}

}  // namespace mxgate::milter
