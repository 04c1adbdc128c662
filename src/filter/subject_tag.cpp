#include "filter/subject_tag.hpp"

namespace mxgate::filter {
namespace {

bool is_subject(std::string_view line) {
  constexpr std::string_view kName = "subject:";
  if (line.size() < kName.size()) return false;
  for (std::size_t i = 0; i < kName.size(); ++i) {
    const char c = line[i] >= 'A' && line[i] <= 'Z' ? static_cast<char>(line[i] + 32) : line[i];
    if (c != kName[i]) return false;
  }
  return true;
}

}  // namespace

std::string tag_subject(std::string_view content, std::string_view tag) {
  if (tag.empty()) return std::string(content);
  std::size_t pos = 0;
  while (pos < content.size()) {
    const std::size_t eol = content.find('\n', pos);
    const std::size_t next = eol == std::string_view::npos ? content.size() : eol + 1;
    const std::string_view line = content.substr(pos, next - pos);
    if (line == "\r\n" || line == "\n") break;  // end of the header block: no Subject
    if (is_subject(line)) {
      std::size_t value = pos + 8;
      while (value < content.size() && (content[value] == ' ' || content[value] == '\t')) ++value;
      if (content.substr(value, tag.size()) == tag) return std::string(content);
      std::string out(content.substr(0, value));
      if (value == pos + 8) out += ' ';
      out += tag;
      // An empty value ("Subject:\r\n") gets the tag alone.
      if (value < content.size() && content[value] != '\r' && content[value] != '\n') out += ' ';
      out += content.substr(value);
      return out;
    }
    pos = next;
  }
  // No Subject: one goes last in the header block (before the empty line).
  std::string out(content.substr(0, pos));
  out += "Subject: ";
  out += tag;
  out += "\r\n";
  out += content.substr(pos);
  return out;
}

}  // namespace mxgate::filter
