// A message as the content checks see it: the MIME tree flattened into its
// leaf parts with transfer encodings undone, plus the decoded header fields
// the phishing, impersonation and spam checks read.  Produced by filter::parse_mime
// (GMime); every string is UTF-8.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "filter/html_links.hpp"

namespace mxgate::filter {

// One RFC 5322 mailbox, RFC 2047 encoded words decoded.
struct Mailbox {
  std::string display_name;  // "Alice Martin"; empty when absent
  std::string address;       // "alice@example.test"
  std::string domain;        // "example.test", lower case; empty when the address has none
};

// A leaf MIME part (text, attachment, or the body of a non-MIME message).
struct Part {
  std::string content_type;  // "application/pdf", lower case
  std::string filename;      // Content-Disposition filename or Content-Type name, decoded; may be empty
  std::string data;          // content with its Content-Transfer-Encoding undone (raw bytes)
  bool attachment = false;   // Content-Disposition: attachment, or a non-text part with a filename
  unsigned depth = 0;        // nesting level in the MIME tree; 0 = the message itself
  bool truncated = false;    // data cut at the decoded-size limit
};

// A top-level header field: the name as written, the value unfolded and its
// RFC 2047 encoded words decoded (GMime's g_mime_header_get_value).
struct HeaderField {
  std::string name;
  std::string value;
};

struct ParsedMessage {
  std::optional<Mailbox> from;      // the first From mailbox
  std::vector<Mailbox> reply_to;
  std::string subject;              // decoded
  std::vector<HeaderField> headers;  // every top-level header field, in order
  std::string text;                 // the text/plain parts, joined with "\n"
  std::string html;                 // the text/html parts, joined with "\n"
  HtmlScan html_body;               // html parsed once (links, forms, visible text) for every check
  std::vector<Part> parts;          // every leaf part, depth-first in message order
  // Set when a limit stopped the parse (depth, part count, decoded size):
  // what was parsed is still checked, and the message is held as unscannable.
  std::string limit_exceeded;
};

}  // namespace mxgate::filter
