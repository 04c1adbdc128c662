#include "delivery/data_framer.hpp"

#include <cstring>

namespace mxgate::delivery {
namespace {

// Index of the first CR or LF at or after from, or s.size().  memchr for the
// LF (fast, vectorised), then a check of the span before it for a CR: in
// CRLF content the only CR sits right before the LF.
std::size_t line_end(std::string_view s, std::size_t from) {
  const char* base = s.data();
  const void* lf = std::memchr(base + from, '\n', s.size() - from);
  const std::size_t stop = lf ? static_cast<std::size_t>(static_cast<const char*>(lf) - base) : s.size();
  const void* cr = std::memchr(base + from, '\r', stop - from);
  return cr ? static_cast<std::size_t>(static_cast<const char*>(cr) - base) : stop;
}

}  // namespace

std::size_t DataFramer::clean_prefix(std::size_t max, bool& blocked) const {
  const std::size_t limit = std::min(max, rest_.size());
  std::size_t i = 0;
  bool at_line_start = line_start_;
  blocked = false;
  while (i < limit) {
    if (at_line_start && rest_[i] == '.') {
      blocked = true;
      break;
    }
    const std::size_t end = line_end(rest_, i);
    if (end >= limit) {
      // No line end before the limit: the text up to it is clean (an
      // unterminated last line gets its CRLF from next()).
      i = limit;
      break;
    }
    if (rest_[end] != '\r' || end + 1 >= rest_.size() || rest_[end + 1] != '\n') {
      i = end;  // a bare CR or LF: the text before it is clean
      blocked = true;
      break;
    }
    if (end + 2 > limit) {
      i = end;  // keep CR and LF in one piece
      break;
    }
    i = end + 2;
    at_line_start = true;
  }
  return i;
}

void DataFramer::frame_lines(std::size_t max) {
  scratch_.clear();
  while (!rest_.empty() && scratch_.size() < max) {
    if (line_start_ && rest_.front() == '.') scratch_ += '.';
    const std::size_t end = line_end(rest_, 0);
    scratch_.append(rest_.substr(0, end));
    if (end == rest_.size()) {
      rest_ = {};
      line_start_ = false;
      break;
    }
    scratch_ += "\r\n";
    // CRLF is one line end; a bare CR or a bare LF is made one too.
    const bool crlf = rest_[end] == '\r' && end + 1 < rest_.size() && rest_[end + 1] == '\n';
    rest_.remove_prefix(end + (crlf ? 2 : 1));
    line_start_ = true;
  }
}

std::string_view DataFramer::next(std::size_t max) {
  if (done_) return {};
  if (max == 0) max = 1;
  if (rest_.empty()) {
    done_ = true;
    scratch_ = line_start_ ? ".\r\n" : "\r\n.\r\n";
    return scratch_;
  }
  // A short clean run before a line that needs changing is copied along
  // with it: content full of bare LFs must not become one write per line.
  bool blocked = false;
  if (const std::size_t n = clean_prefix(max, blocked); n > 0 && (!blocked || n >= max / 4)) {
    const std::string_view piece = rest_.substr(0, n);
    rest_.remove_prefix(n);
    line_start_ = piece.ends_with("\r\n");
    return piece;
  }
  frame_lines(max);
  return scratch_;
}

std::string frame_data(std::string_view content) {
  std::string out;
  out.reserve(content.size() + content.size() / 64 + 8);
  DataFramer framer(content);
  while (!framer.done()) out.append(framer.next(64 * 1024));
  return out;
}

}  // namespace mxgate::delivery
