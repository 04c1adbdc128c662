#include "delivery/smtp_reply_parser.hpp"

#include <cstring>

namespace mxgate::delivery {

std::string ServerReply::text() const {
  const std::string code_text = std::to_string(code);
  if (lines.empty()) return code_text;
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += ' ';
    out += code_text;
    const bool last = i + 1 == lines.size();
    if (!last) {
      out += '-';
    } else if (!lines[i].empty()) {
      out += ' ';
    }
    out += lines[i];
  }
  return out;
}

std::string_view to_string(ReplyParser::Error error) {
  switch (error) {
    case ReplyParser::Error::none:
      return "no error";
    case ReplyParser::Error::malformed_line:
      return "malformed reply line";
    case ReplyParser::Error::inconsistent_code:
      return "reply code changed inside a multi-line reply";
    case ReplyParser::Error::line_too_long:
      return "reply line too long";
    case ReplyParser::Error::reply_too_long:
      return "reply too long";
  }
  return "?";
}

std::size_t ReplyParser::feed(std::string_view bytes) {
  std::size_t consumed = 0;
  while (consumed < bytes.size() && !failed()) {
    const char* start = bytes.data() + consumed;
    const std::size_t left = bytes.size() - consumed;
    const void* lf = std::memchr(start, '\n', left);
    const std::size_t take = lf ? static_cast<std::size_t>(static_cast<const char*>(lf) - start) : left;
    // A line's octets before its LF may number at most kMaxLineLength - 1.
    if (line_.size() + take > kMaxLineLength - 1) {
      const std::size_t room = kMaxLineLength - 1 - line_.size();
      buffered_ += room + 1;
      consumed += room + 1;
      fail(Error::line_too_long);
      break;
    }
    line_.append(start, take);
    buffered_ += take;
    consumed += take;
    if (lf) {
      ++buffered_;
      ++consumed;
      end_line();
    }
  }
  return consumed;
}

void ReplyParser::end_line() {
  std::string_view line = line_;
  const std::size_t wire = line_.size() + 1;  // with the LF
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const auto digit = [](char c, char max) { return c >= '0' && c <= max; };
  if (line.size() < 3 || line[0] < '2' || !digit(line[0], '5') || !digit(line[1], '5') ||
      !digit(line[2], '9') || (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
    fail(Error::malformed_line);
    return;
  }
  const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  if (!current_.lines.empty() && code != current_.code) {
    fail(Error::inconsistent_code);
    return;
  }
  if (current_size_ + wire > kMaxReplySize) {
    fail(Error::reply_too_long);
    return;
  }
  current_.code = code;
  current_size_ += wire;
  const bool more = line.size() > 3 && line[3] == '-';
  current_.lines.emplace_back(line.size() > 4 ? line.substr(4) : std::string_view());
  line_.clear();
  if (!more) {
    ready_.push_back(std::move(current_));
    ready_sizes_.push_back(current_size_);
    current_ = ServerReply{};
    current_size_ = 0;
  }
}

ServerReply ReplyParser::take() {
  ServerReply reply = std::move(ready_.front());
  ready_.pop_front();
  buffered_ -= ready_sizes_.front();
  ready_sizes_.pop_front();
  return reply;
}

std::size_t ReplyParser::discard() {
  const std::size_t dropped = buffered_;
  line_.clear();
  current_ = ServerReply{};
  current_size_ = 0;
  ready_.clear();
  ready_sizes_.clear();
  buffered_ = 0;
  return dropped;
}

}  // namespace mxgate::delivery
