#include "smtp/reply.hpp"

namespace mxgate::smtp {

void append_reply(std::string& out, const Reply& reply) {
  out += std::to_string(reply.code);
  out += ' ';
  if (!reply.enhanced.empty()) {
    out += reply.enhanced;
    out += ' ';
  }
  out += reply.text;
  out += "\r\n";
}

void append_multiline(std::string& out, int code, const std::vector<std::string>& lines) {
  const std::string code_text = std::to_string(code);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    out += code_text;
    out += (i + 1 == lines.size()) ? ' ' : '-';
    out += lines[i];
    out += "\r\n";
  }
}

}  // namespace mxgate::smtp
