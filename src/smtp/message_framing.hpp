// Message content framing.  DATA (RFC 5321 sections 4.1.1.4 and 4.5.2): the
// content ends only at <CRLF>.<CRLF>, lines starting with a period are
// unstuffed.  BDAT (RFC 3030): the content is length-delimited.
//
// Both reject bare CR and bare LF (RFC 5321 section 2.3.8): a line ending
// other than CRLF is where SMTP smuggling lives (\n.\n, \r.\r, \n.\r\n,
// \r\n.\r ending a message at one hop but not at the next), so such content
// is flagged, never treated as a line end, and the message is refused.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mxgate::smtp {

class DataDecoder {
 public:
  struct Progress {
    std::size_t consumed = 0;  // bytes of input used, including the final ".\r\n"
    bool done = false;         // <CRLF>.<CRLF> seen; nothing after it was consumed
  };

  // Decodes as much of in as possible, appending unstuffed content (with CRLF
  // line ends) to out; out may be null to count and check without keeping.
  Progress feed(std::string_view in, std::string* out);

  bool bare_newline() const { return bare_newline_; }
  std::uint64_t content_size() const { return size_; }

 private:
  enum class State { line_start, dot, text, cr, dot_cr };
  void emit(std::string* out, std::string_view bytes);

  State state_ = State::line_start;  // DATA content starts right after the command's CRLF
  bool bare_newline_ = false;
  std::uint64_t size_ = 0;
};

// Checks BDAT content, which may be split at any byte across chunks.
class LineEndingChecker {
 public:
  void feed(std::string_view bytes);
  // Call at the last chunk: a trailing CR is bare too.
  void finish();
  bool bare_newline() const { return bare_newline_; }

 private:
  bool prev_cr_ = false;
  bool bare_newline_ = false;
};

}  // namespace mxgate::smtp
