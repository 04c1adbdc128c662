#include "sender_auth/authentication_results.hpp"

namespace mxgate::sender_auth {
namespace {

bool iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if ((x >= 'A' && x <= 'Z' ? x + 32 : x) != (y >= 'A' && y <= 'Z' ? y + 32 : y)) return false;
  }
  return true;
}

// A property value as an RFC 5322 dot-atom or addr-spec: anything else
// (spaces, quotes, ';', controls) is dropped rather than quoted.
std::string value(std::string_view text) {
  std::string out;
  for (const char c : text.substr(0, 256)) {
    const auto u = static_cast<unsigned char>(c);
    const bool ok = (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') ||
                    std::string_view("!#$%&'*+-/=?^_`{|}~.@").find(c) != std::string_view::npos;
    if (ok) out += c;
  }
  return out.empty() ? std::string("unknown") : out;
}

// A comment's text: no parentheses, backslashes or controls, bounded.
std::string comment(std::string_view text) {
  std::string out;
  for (const char c : text.substr(0, 200)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '(' || c == ')' || c == '\\') continue;
    out += c;
  }
  return out;
}

}  // namespace

std::string authentication_results_field(std::string_view authserv_id, const AuthenticationResults& results) {
  std::string out = "Authentication-Results: " + value(authserv_id);
  std::size_t methods = 0;
  auto add = [&](const std::string& text) {
    out += ";\r\n\t" + text;
    ++methods;
  };
  if (results.spf) {
    std::string text = "spf=" + std::string(to_string(results.spf->result));
    if (!results.spf->reason.empty()) text += " (" + comment(results.spf->reason) + ")";
    text += " smtp.mailfrom=" + value(results.mail_from);
    add(text);
  }
  // A message may carry any number of signatures; the field stays bounded.
  constexpr std::size_t kMaxDkimResults = 10;
  std::size_t dkim_results = 0;
  for (const DkimVerdict& dkim : results.dkim) {
    if (++dkim_results > kMaxDkimResults) break;
    std::string text = "dkim=" + std::string(to_string(dkim.result));
    if (!dkim.reason.empty()) text += " (" + comment(dkim.reason) + ")";
    if (!dkim.domain.empty()) text += " header.d=" + value(dkim.domain);
    if (!dkim.selector.empty()) text += " header.s=" + value(dkim.selector);
    if (!dkim.b_prefix.empty()) text += " header.b=" + value(dkim.b_prefix);
    add(text);
  }
  if (results.dmarc) {
    std::string text = "dmarc=" + std::string(to_string(results.dmarc->result));
    std::string note = results.dmarc->reason;
    if (results.dmarc->result == DmarcResult::fail)
      note = "p=" + std::string(to_string(results.dmarc->policy)) + "; " + note;
    if (!note.empty()) text += " (" + comment(note) + ")";
    if (!results.dmarc->from_domain.empty()) text += " header.from=" + value(results.dmarc->from_domain);
    add(text);
  }
  if (methods == 0) out += "; none";
  return out + "\r\n";
}

std::vector<std::pair<std::size_t, std::size_t>> our_authentication_results(std::string_view content,
                                                                            std::string_view authserv_id) {
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  constexpr std::string_view kName = "Authentication-Results";
  std::size_t pos = 0;
  while (pos < content.size()) {
    std::size_t eol = content.find('\n', pos);
    std::size_t next = eol == std::string_view::npos ? content.size() : eol + 1;
    std::string_view line = content.substr(pos, next - pos);
    if (line == "\r\n" || line == "\n") break;  // end of the header block
    // The field with its continuation lines.
    while (next < content.size() && (content[next] == ' ' || content[next] == '\t')) {
      eol = content.find('\n', next);
      next = eol == std::string_view::npos ? content.size() : eol + 1;
    }
    const std::string_view field = content.substr(pos, next - pos);
    const auto colon = field.find(':');
    if (colon != std::string_view::npos && iequal(field.substr(0, colon), kName)) {
      // authserv-id: the first token of the value, up to ';', space or a comment.
      std::string_view rest = field.substr(colon + 1);
      while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t' || rest.front() == '\r' ||
                               rest.front() == '\n'))
        rest.remove_prefix(1);
      const auto end = rest.find_first_of("; \t\r\n(");
      if (iequal(rest.substr(0, end), authserv_id)) ranges.emplace_back(pos, next);
    }
    pos = next;
  }
  return ranges;
}

}  // namespace mxgate::sender_auth
