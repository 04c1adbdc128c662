// The octets a client sends after "354" (RFC 5321 sections 4.1.1.4 and
// 4.5.2): the content with every line that starts with "." given one more,
// then CRLF "." CRLF.  A last line without its CRLF gets one.  Defence in
// depth (the intake refuses them): a bare CR or LF in content is sent as
// CRLF, so no receiver can see a line end other than the ones the
// dot-stuffing saw (the SMTP smuggling class).
//
// Why a piecewise framer: a framed copy of a whole 1 MiB message cost a
// fresh 1 MiB buffer per delivery (page faults and a full copy, the largest
// client-side cost in bench/run scenario d).  Content that needs no change
// (the usual case: the intake only accepts CRLF line ends) is handed out as
// views into the content itself; only lines that need stuffing or a line end
// repaired are copied.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mxgate::delivery {

class DataFramer {
 public:
  // content must outlive the framer.
  explicit DataFramer(std::string_view content) : rest_(content) {}

  // The next piece of the framed octets, empty once all were given (the
  // last piece ends with CRLF "." CRLF).  A piece is at most about max
  // bytes (a single stuffed line may be longer) and stays valid until the
  // next call.
  std::string_view next(std::size_t max);

  bool done() const { return done_; }

 private:
  // Length of the longest prefix of rest_, at most max bytes, that goes on
  // the wire unchanged; blocked: it ends where a line needs changing.
  std::size_t clean_prefix(std::size_t max, bool& blocked) const;
  // Frames whole lines of rest_ into scratch_ until it holds about max bytes.
  void frame_lines(std::size_t max);

  std::string_view rest_;
  std::string scratch_;
  bool line_start_ = true;
  bool done_ = false;
};

// The whole framed content at once.
std::string frame_data(std::string_view content);

}  // namespace mxgate::delivery
