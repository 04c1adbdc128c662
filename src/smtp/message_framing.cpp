#include "smtp/message_framing.hpp"

#include <cstring>

namespace mxgate::smtp {

void DataDecoder::emit(std::string* out, std::string_view bytes) {
  size_ += bytes.size();
  if (out != nullptr) out->append(bytes);
}

namespace {

// The end of the longest prefix of in[from..] that is text followed by
// zero or more "\r\n" + non-period line starts: bytes that need no state
// machine.  Stops before any CR that is not followed, within in, by LF and
// a byte other than '.', and before any LF not preceded by CR.
std::size_t ordinary_run(std::string_view in, std::size_t from) {
  const char* base = in.data();
  const std::size_t n = in.size();
  std::size_t good = from;
  for (std::size_t j = from;;) {
    const void* found = std::memchr(base + j, '\r', n - j);
    const std::size_t cr = found ? static_cast<std::size_t>(static_cast<const char*>(found) - base) : n;
    if (std::memchr(base + j, '\n', cr - j) != nullptr) return good;  // a bare LF: byte-wise
    if (cr == n) return n;                                             // no line end yet
    if (cr + 2 < n && base[cr + 1] == '\n' && base[cr + 2] != '.') {
      j = cr + 2;
      good = j;
      continue;
    }
    return cr;  // the CR (and what follows) goes through the states
  }
}

}  // namespace

DataDecoder::Progress DataDecoder::feed(std::string_view in, std::string* out) {
  std::size_t i = 0;
  const std::size_t n = in.size();
  while (i < n) {
    const char c = in[i];
    switch (state_) {
      case State::line_start:
        if (c == '.') {
          state_ = State::dot;
          ++i;
          continue;
        }
        state_ = State::text;
        continue;  // same byte, as text
      case State::dot:
        if (c == '\r') {
          state_ = State::dot_cr;
          ++i;
          continue;
        }
        // A stuffed period: drop it, the rest of the line is text.
        state_ = State::text;
        continue;
      case State::dot_cr:
        if (c == '\n') {
          state_ = State::line_start;
          return {i + 1, true};
        }
        // ".\r" then something else: a bare CR, never an end of data.
        bare_newline_ = true;
        emit(out, ".\r");
        state_ = State::text;
        continue;
      case State::cr:
        if (c == '\n') {
          emit(out, "\r\n");
          state_ = State::line_start;
          ++i;
          continue;
        }
        bare_newline_ = true;
        emit(out, "\r");
        state_ = State::text;
        continue;
      case State::text: {
        // Fast path: ordinary lines (CRLF-terminated, no bare CR or LF, the
        // next line not starting with a period) are copied in one append;
        // anything else falls through to the byte-wise states below.
        const std::size_t plain = ordinary_run(in, i);
        if (plain > i) {
          emit(out, in.substr(i, plain - i));
          i = plain;
          continue;
        }
        if (c == '\r') {
          state_ = State::cr;
          ++i;
          continue;
        }
        if (c == '\n') {
          // A bare LF ends nothing: the next line does not start a fresh
          // line, so "\n.\r\n" cannot end the message.
          bare_newline_ = true;
          emit(out, "\n");
          ++i;
          continue;
        }
        std::size_t end = i + 1;
        while (end < n && in[end] != '\r' && in[end] != '\n') ++end;
        emit(out, in.substr(i, end - i));
        i = end;
        continue;
      }
    }
  }
  return {n, false};
}

void LineEndingChecker::feed(std::string_view bytes) {
  for (const char c : bytes) {
    if (prev_cr_ && c != '\n') bare_newline_ = true;
    if (c == '\n' && !prev_cr_) bare_newline_ = true;
    prev_cr_ = (c == '\r');
  }
}

void LineEndingChecker::finish() {
  if (prev_cr_) bare_newline_ = true;
  prev_cr_ = false;
}

}  // namespace mxgate::smtp
