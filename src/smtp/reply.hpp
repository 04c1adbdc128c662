// SMTP replies (RFC 5321 section 4.2) with enhanced status codes (RFC 2034,
// RFC 3463).  The one place reply lines are formatted, so every reply ends in
// CRLF and multi-line replies use "code-" continuation lines.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mxgate::smtp {

struct Reply {
  int code = 0;
  std::string_view enhanced;  // "2.0.0", or empty for the greeting and EHLO (RFC 2034 section 3)
  std::string text;
};

// Appends "code enhanced text\r\n" to out.
void append_reply(std::string& out, const Reply& reply);

// Appends a multi-line reply: every line but the last as "code-line".
void append_multiline(std::string& out, int code, const std::vector<std::string>& lines);

}  // namespace mxgate::smtp
