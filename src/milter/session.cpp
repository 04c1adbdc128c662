// The milter client state machine (src/milter/session.hpp).
#include "milter/session.hpp"

#include <algorithm>

namespace mxgate::milter {
namespace {

constexpr const char* kDaemonName = "mxgate";

bool is_wsp(char c) { return c == ' ' || c == '\t'; }

// A header field name (RFC 5322 section 3.6.8: printable US-ASCII but ':').
bool valid_field_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x21 && u <= 0x7e && c != ':';
  });
}

struct Line {
  std::size_t end;   // where the line's text ends (before CR LF or LF)
  std::size_t next;  // where the next line starts
};

Line line_at(std::string_view text, std::size_t from) {
  const std::size_t lf = text.find('\n', from);
  if (lf == std::string_view::npos) return {text.size(), text.size()};
  return {lf > from && text[lf - 1] == '\r' ? lf - 1 : lf, lf + 1};
}

bool contains_nul(std::string_view text) { return text.find('\0') != std::string_view::npos; }

std::string hex32(std::uint32_t value) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) out += kHex[(value >> shift) & 0xf];
  return out;
}

}  // namespace

HeaderBlock split_header_block(std::string_view content) {
  HeaderBlock block;
  std::size_t pos = 0;
  for (;;) {
    if (pos >= content.size()) {
      block.rest = content.substr(content.size());
      block.body = block.rest;
      return block;
    }
    const Line line = line_at(content, pos);
    const std::string_view text = content.substr(pos, line.end - pos);
    if (text.empty()) {
      block.rest = content.substr(pos);
      block.body = content.substr(line.next);
      return block;
    }
    const std::size_t colon = text.find(':');
    std::string_view name = colon == std::string_view::npos ? std::string_view{} : text.substr(0, colon);
    while (!name.empty() && is_wsp(name.back())) name.remove_suffix(1);
    if (colon == std::string_view::npos || !valid_field_name(name)) {
      block.rest = content.substr(pos);
      block.body = block.rest;
      return block;
    }
    const std::size_t start = pos;
    const std::size_t value_start = pos + colon + 1;
    std::size_t value_end = line.end;
    pos = line.next;
    while (pos < content.size() && is_wsp(content[pos])) {
      const Line more = line_at(content, pos);
      value_end = more.end;
      pos = more.next;
    }
    block.fields.push_back(HeaderBlock::Field{name, content.substr(value_start, value_end - value_start),
                                              content.substr(start, pos - start)});
  }
}

MilterSession::MilterSession(const MilterMessage& message)
    : message_(message), headers_(split_header_block(message.content)) {}

std::string MilterSession::awaited() const {
  return awaiting_ == 0 ? std::string{} : command_name(awaiting_);
}

Result<void> MilterSession::check_message() const {
  const std::pair<const char*, const std::string*> fields[] = {
      {"client address", &message_.client_address},
      {"client name", &message_.client_name},
      {"HELO name", &message_.helo},
      {"sender", &message_.sender},
      {"queue id", &message_.queue_id},
      {"hostname", &message_.our_hostname},
  };
  for (const auto& [what, value] : fields)
    if (contains_nul(*value)) return make_error(std::string("the ") + what + " holds a NUL byte");
  for (const std::string& recipient : message_.recipients)
    if (contains_nul(recipient)) return make_error("a recipient holds a NUL byte");
  return {};
}

void MilterSession::send(std::string& out, char command, const std::string& packet, bool reply_expected) {
  out += packet;
  if (reply_expected) awaiting_ = command;
}

void MilterSession::send_macros(std::string& out, char for_command, const Macros& macros) {
  Macros present;
  for (const auto& macro : macros)
    if (!macro.second.empty()) present.push_back(macro);
  if (!present.empty()) out += encode_macros(for_command, present);
}

Macros MilterSession::id_macros() const { return {{"i", message_.queue_id}}; }

void MilterSession::next_in_stage(std::string& out) {
  switch (stage_) {
    case Stage::start: {
      if (auto checked = check_message(); !checked) {
        fail("not sent: " + checked.error());
        return;
      }
      send(out, smfic::kOptionNegotiation,
           encode_option_negotiation(kProtocolVersion, kOfferedActions, kOfferedProtocol), true);
      stage_ = Stage::connect;
      return;
    }
    case Stage::connect: {
      const std::string& address = message_.client_address;
      char family = smfia::kInet;
      if (address.empty()) {
        family = smfia::kUnknown;
      } else if (address.front() == '/') {
        family = smfia::kUnix;
      } else if (address.find(':') != std::string::npos) {
        family = smfia::kInet6;
      }
      const std::string host = !message_.client_name.empty() ? message_.client_name
                               : address.empty()             ? std::string("unknown")
                                                             : "[" + address + "]";
      const std::string underscore = address.empty() ? host : host + " [" + address + "]";
      send_macros(out, smfic::kConnect,
                  {{"j", message_.our_hostname},
                   {"_", underscore},
                   {"{daemon_name}", kDaemonName},
                   {"v", kDaemonName},
                   {"{client_addr}", address},
                   {"{client_name}", host},
                   {"{client_port}", message_.client_port ? std::to_string(message_.client_port) : ""}});
      if (wants(smfip::kNoConnect))
        send(out, smfic::kConnect, encode_connect(host, family, message_.client_port, address),
             replies(smfip::kNoReplyConnect));
      stage_ = Stage::helo;
      return;
    }
    case Stage::helo:
      if (!message_.helo.empty() && wants(smfip::kNoHelo))
        send(out, smfic::kHelo, encode_helo(message_.helo), replies(smfip::kNoReplyHelo));
      stage_ = Stage::mail;
      return;
    case Stage::mail:
      message_started_ = true;
      send_macros(out, smfic::kMail, {{"i", message_.queue_id}, {"{mail_addr}", message_.sender}});
      if (wants(smfip::kNoMail))
        send(out, smfic::kMail, encode_mail(message_.sender), replies(smfip::kNoReplyMail));
      stage_ = Stage::recipients;
      position_ = 0;
      return;
    case Stage::recipients:
      if (position_ >= message_.recipients.size()) {
        stage_ = Stage::data;
        return;
      }
      send_macros(out, smfic::kRecipient,
                  {{"i", message_.queue_id}, {"{rcpt_addr}", message_.recipients[position_]}});
      if (wants(smfip::kNoRecipient))
        send(out, smfic::kRecipient, encode_recipient(message_.recipients[position_]),
             replies(smfip::kNoReplyRecipient));
      ++position_;
      return;
    case Stage::data:
      // SMFIC_DATA came with protocol version 4 (Postfix's milter8.c sends
      // no step a milter's version does not define).
      if (version_ >= 4) {
        send_macros(out, smfic::kData, id_macros());
        if (wants(smfip::kNoData)) send(out, smfic::kData, encode_data(), replies(smfip::kNoReplyData));
      }
      stage_ = Stage::headers;
      position_ = 0;
      return;
    case Stage::headers: {
      if (!wants(smfip::kNoHeaders) || position_ >= headers_.fields.size()) {
        stage_ = Stage::end_of_headers;
        return;
      }
      const HeaderBlock::Field& field = headers_.fields[position_++];
      if (contains_nul(field.raw)) {
        fail("not sent: header field " + quote_text(field.name) + " holds a NUL byte");
        return;
      }
      std::string_view value = field.value;
      if ((protocol_ & smfip::kHeaderLeadingSpace) == 0 && !value.empty() && value.front() == ' ')
        value.remove_prefix(1);
      std::string wire;
      wire.reserve(value.size());
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (value[i] == '\r' && i + 1 < value.size() && value[i + 1] == '\n') continue;
        wire += value[i];
      }
      if (field.name.size() + wire.size() + 2 > kMaxBodyChunk) {
        fail("not sent: header field " + quote_text(field.name) + " is longer than a milter packet allows (" +
             std::to_string(kMaxBodyChunk) + " bytes)");
        return;
      }
      send(out, smfic::kHeader, encode_header(field.name, wire), replies(smfip::kNoReplyHeader));
      return;
    }
    case Stage::end_of_headers:
      send_macros(out, smfic::kEndOfHeaders, id_macros());
      if (wants(smfip::kNoEndOfHeaders))
        send(out, smfic::kEndOfHeaders, encode_end_of_headers(), replies(smfip::kNoReplyEndOfHeaders));
      stage_ = Stage::body;
      position_ = 0;
      return;
    case Stage::body: {
      const std::string_view body = headers_.body;
      if (!wants(smfip::kNoBody) || position_ >= body.size()) {
        stage_ = Stage::end_of_body;
        return;
      }
      const std::string_view chunk = body.substr(position_, kMaxBodyChunk);
      position_ += chunk.size();
      send(out, smfic::kBody, encode_body(chunk), replies(smfip::kNoReplyBody));
      return;
    }
    case Stage::end_of_body:
      send_macros(out, smfic::kEndOfBody, id_macros());
      send(out, smfic::kEndOfBody, encode_end_of_body(), true);
      end_of_body_sent_ = true;
      stage_ = Stage::quit;
      return;
    case Stage::quit:
    case Stage::closed:
      return;
  }
}

MilterSession::Step MilterSession::advance() {
  Step step;
  if (finished_) {
    step.next = Next::close;
    return step;
  }
  if (awaiting_ != 0) {
    step.next = Next::read;
    return step;
  }
  for (;;) {
    if (stage_ == Stage::quit) {
      // Sendmail sends SMFIC_ABORT when a message ends before its end of body.
      if (decided_ && message_started_ && !end_of_body_sent_) step.output += encode_abort();
      step.output += encode_quit();
      finish();
      step.next = Next::close;
      return step;
    }
    next_in_stage(step.output);
    if (finished_) {
      step.output.clear();
      step.next = Next::close;
      return step;
    }
    if (awaiting_ != 0) {
      step.next = Next::read;
      return step;
    }
    if (step.output.size() >= kMaxOutputPerStep) {
      step.next = Next::write;
      return step;
    }
  }
}

void MilterSession::receive(std::string_view bytes) {
  while (!bytes.empty() && !finished_ && awaiting_ != 0) {
    bytes.remove_prefix(decoder_.feed(bytes));
    if (decoder_.state() == PacketDecoder::State::packet) {
      handle(decoder_.take());
    } else if (decoder_.state() == PacketDecoder::State::failed) {
      fail("bad packet in the reply to " + awaited() + ": " + decoder_.error());
    }
  }
  // Bytes after the awaited reply are dropped: a milter sends nothing
  // unasked (milter-protocol.txt), so they could only be a violation.
}

void MilterSession::receive_eof() {
  if (finished_ || awaiting_ == 0) return;
  fail(std::string(decoder_.mid_packet() ? "connection closed in the middle of the reply to "
                                         : "connection closed before the reply to ") +
       awaited());
}

void MilterSession::handle(const Packet& packet) {
  auto decoded = decode_reply(packet);
  if (!decoded) {
    fail("bad reply to " + awaited() + ": " + decoded.error());
    return;
  }
  Reply& reply = *decoded;
  const std::string name = reply_name(packet.command);
  if (awaiting_ == smfic::kOptionNegotiation) {
    handle_negotiation(reply, name);
    return;
  }
  switch (reply.kind) {
    case Reply::Kind::progress:
      ++progress_;
      return;
    case Reply::Kind::quarantine:
      quarantined_ = true;
      outcome_.quarantine_reason = std::move(reply.text);
      return;
    case Reply::Kind::continue_:
      if (awaiting_ == smfic::kEndOfBody) {
        verdict(MilterResult::Action::accept);
      } else {
        awaiting_ = 0;
      }
      return;
    case Reply::Kind::skip:
      // Skip the rest of the steps of this kind (Postfix's skip_event_type).
      if (awaiting_ == smfic::kBody) position_ = headers_.body.size();
      if (awaiting_ == smfic::kHeader) position_ = headers_.fields.size();
      if (awaiting_ == smfic::kRecipient) position_ = message_.recipients.size();
      if (awaiting_ == smfic::kEndOfBody) {
        verdict(MilterResult::Action::accept);
      } else {
        awaiting_ = 0;
      }
      return;
    case Reply::Kind::accept:
      verdict(MilterResult::Action::accept);
      return;
    case Reply::Kind::reject:
      verdict(MilterResult::Action::reject);
      return;
    case Reply::Kind::tempfail:
      verdict(MilterResult::Action::tempfail);
      return;
    case Reply::Kind::reply_code: {
      const auto action =
          reply.text.front() == '4' ? MilterResult::Action::tempfail : MilterResult::Action::reject;
      verdict(action, std::move(reply.text));
      return;
    }
    case Reply::Kind::shutdown:
    case Reply::Kind::connection_failure:
      note(name + " (the milter asks to end the SMTP session) was taken as a tempfail");
      verdict(MilterResult::Action::tempfail);
      return;
    case Reply::Kind::discard:
      if (awaiting_ == smfic::kConnect || awaiting_ == smfic::kHelo) {
        note("ignored " + name + " in reply to " + awaited() + ": discard applies to messages only");
        awaiting_ = 0;
      } else {
        verdict(MilterResult::Action::discard);
      }
      return;
    case Reply::Kind::negotiation:
      fail("unexpected " + name + " in reply to " + awaited());
      return;
    case Reply::Kind::add_header:
    case Reply::Kind::insert_header:
    case Reply::Kind::change_header:
    case Reply::Kind::add_recipient:
    case Reply::Kind::add_recipient_args:
    case Reply::Kind::delete_recipient:
    case Reply::Kind::change_from:
    case Reply::Kind::replace_body:
      if (awaiting_ != smfic::kEndOfBody) {
        fail("unexpected " + name + " in reply to " + awaited() +
             " (modifications may come only in reply to SMFIC_BODYEOB)");
        return;
      }
      handle_modification(std::move(reply), name);
      return;
  }
}

void MilterSession::handle_negotiation(const Reply& reply, const std::string& name) {
  if (reply.kind != Reply::Kind::negotiation) {
    fail("expected the reply to SMFIC_OPTNEG, got " + name);
    return;
  }
  if (reply.version < 2 || reply.version > kProtocolVersion) {
    fail("the milter speaks protocol version " + std::to_string(reply.version) + "; we speak 2 to " +
         std::to_string(kProtocolVersion));
    return;
  }
  // Postfix refuses a milter asking for actions it did not offer; we go on,
  // since such replies are ignored with a note anyway (a milter like rspamd's
  // may ask for more than it uses).
  if ((reply.actions & ~kOfferedActions) != 0)
    note("the milter asked for actions we did not offer (" + hex32(reply.actions & ~kOfferedActions) +
         "); such replies are ignored");
  if ((reply.protocol & ~kOfferedProtocol) != 0)
    note("the milter set protocol bits we did not offer (" + hex32(reply.protocol & ~kOfferedProtocol) +
         "); ignored");
  version_ = reply.version;
  actions_ = reply.actions;
  protocol_ = reply.protocol & kOfferedProtocol;
  awaiting_ = 0;
}

void MilterSession::handle_modification(Reply reply, const std::string& name) {
  switch (reply.kind) {
    case Reply::Kind::add_header:
    case Reply::Kind::insert_header:
    case Reply::Kind::change_header: {
      if (!valid_field_name(reply.name)) {
        fail(name + " with an invalid header name " + quote_text(reply.name));
        return;
      }
      // Line breaks as CRLF; each must start a fold.
      std::string value;
      value.reserve(reply.text.size() + 8);
      if ((protocol_ & smfip::kHeaderLeadingSpace) == 0 && !reply.text.empty()) value += ' ';
      const std::string& text = reply.text;
      for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;  // the LF handles it
        if (c == '\r') {
          fail(name + " " + quote_text(reply.name) + " with a bare CR in its value");
          return;
        }
        if (c == '\n') {
          if (i + 1 >= text.size() || !is_wsp(text[i + 1])) {
            fail(name + " " + quote_text(reply.name) + " with a line break not followed by white space");
            return;
          }
          value += "\r\n";
          continue;
        }
        value += c;
      }
      change_bytes_ += reply.name.size() + value.size();
      if (outcome_.header_changes.size() >= kMaxHeaderChanges || change_bytes_ > kMaxHeaderChangeBytes) {
        fail("the milter sent more than " + std::to_string(kMaxHeaderChanges) + " header changes or " +
             std::to_string(kMaxHeaderChangeBytes) + " bytes of them");
        return;
      }
      HeaderChange change;
      change.kind = reply.kind == Reply::Kind::add_header      ? HeaderChange::Kind::add
                    : reply.kind == Reply::Kind::insert_header ? HeaderChange::Kind::insert
                                                               : HeaderChange::Kind::change;
      change.index = reply.index;
      if (change.kind == HeaderChange::Kind::change && change.index == 0) change.index = 1;
      change.name = std::move(reply.name);
      change.value = std::move(value);
      outcome_.header_changes.push_back(std::move(change));
      return;
    }
    case Reply::Kind::replace_body:
      ++replaced_body_packets_;
      replaced_body_bytes_ += reply.text.size();
      return;
    case Reply::Kind::add_recipient:
    case Reply::Kind::add_recipient_args:
    case Reply::Kind::delete_recipient:
      note("ignored " + name + " " + quote_text(reply.text) + ": recipient changes are not supported");
      return;
    case Reply::Kind::change_from:
      note("ignored " + name + " " + quote_text(reply.text) + ": sender changes are not supported");
      return;
    default:
      return;
  }
}

void MilterSession::verdict(MilterResult::Action action, std::string reply) {
  if (awaiting_ == smfic::kRecipient && message_.recipients.size() > 1 &&
      action != MilterResult::Action::accept)
    note("the milter's verdict for recipient " + quote_text(message_.recipients[position_ - 1]) +
         " applies to the whole message of " + std::to_string(message_.recipients.size()) + " recipients");
  outcome_.action = action;
  outcome_.reply = std::move(reply);
  decided_ = true;
  awaiting_ = 0;
  stage_ = Stage::quit;
}

void MilterSession::note(std::string text) {
  if (outcome_.notes.size() < kMaxNotes) {
    outcome_.notes.push_back(std::move(text));
  } else {
    ++ignored_notes_;
  }
}

void MilterSession::fail(std::string message) {
  finished_ = true;
  awaiting_ = 0;
  stage_ = Stage::closed;
  result_ = make_error(std::move(message));
}

void MilterSession::finish() {
  if (replaced_body_packets_ > 0)
    note("ignored SMFIR_REPLBODY (" + std::to_string(replaced_body_bytes_) + " bytes in " +
         std::to_string(replaced_body_packets_) + " packets): body replacement is not supported");
  if (ignored_notes_ > 0) outcome_.notes.push_back(std::to_string(ignored_notes_) + " more notes left out");
  if (outcome_.action == MilterResult::Action::accept && quarantined_)
    outcome_.action = MilterResult::Action::quarantine;
  finished_ = true;
  stage_ = Stage::closed;
  result_ = std::move(outcome_);
}

}  // namespace mxgate::milter
