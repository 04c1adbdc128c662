// Text from a peer (clamd, a milter) inside our one-line error messages:
// quoted, escaped so it can neither break the line nor pass for our own
// words, and bounded.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

namespace mxgate {

inline constexpr std::size_t kMaxQuotedBytes = 200;

namespace detail {
// \" \\ and \xNN for anything outside 0x20..0x7e, of at most kMaxQuotedBytes input bytes.
inline std::string escape_prefix(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char ch : text.substr(0, kMaxQuotedBytes)) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c >= 0x20 && c < 0x7f) {
      out += ch;
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}
}  // namespace detail

// The text escaped (see above), "..." after it when it was cut.
inline std::string escaped(std::string_view text) {
  return detail::escape_prefix(text) + (text.size() > kMaxQuotedBytes ? "..." : "");
}

// "text", escaped, "..." after the closing quote when it was cut.  Not
// named quoted(): for a std::string argument, argument-dependent lookup
// would prefer std::quoted wherever <iomanip> is visible.
inline std::string quote_escaped(std::string_view text) {
  return "\"" + detail::escape_prefix(text) + "\"" + (text.size() > kMaxQuotedBytes ? "..." : "");
}

}  // namespace mxgate
