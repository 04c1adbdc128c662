// The parts of an HTML document the content checks judge: each link with the
// text a reader sees for it, each form with whether it asks for a password,
// and the document's visible text (for the spam rules).
//
// Mail HTML is routinely broken and hostile, so it is parsed the way a mail
// client renders it, with libxml2's error-recovering HTML parser (HTML 4
// content model plus recovery; HTML_PARSE_NONET so that no DTD or entity is
// ever fetched) instead of a hand-written tag scanner that attackers can
// desynchronise from the renderer.  The tree is walked iteratively, so
// nesting depth costs no stack.
//
// Limits.  These stop collection and set truncated: kMaxHtmlLinks links and
// kMaxHtmlForms forms per document; documents larger than INT_MAX bytes
// (libxml2 takes an int) are parsed up to that size; and truncated is also
// set when libxml2 itself gives up part-way.  Not reported: link text is cut
// at kMaxLinkTextBytes and gathered from at most kMaxLinkTextNodes nodes
// under one link (so nested links cannot make the walk quadratic).  Nesting
// depth is not limited (XML_PARSE_HUGE): libxml2's default limit of 256 would
// drop everything inside deeper markup, which browsers still render; the
// input size is bounded by the MIME parser's decoded-size limit.
//
// libxml2 initialises its own globals on first use; a multi-threaded process
// should call xmlInitParser() once before starting threads.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::filter {

inline constexpr std::size_t kMaxHtmlLinks = 1000;
inline constexpr std::size_t kMaxHtmlForms = 100;
inline constexpr std::size_t kMaxLinkTextBytes = 1024;
inline constexpr std::size_t kMaxLinkTextNodes = 4096;
// The document's visible text (HtmlScan::text) is cut here: the spam rules
// read it, and 1 MiB of words is far more than any rule needs.
inline constexpr std::size_t kMaxHtmlTextBytes = 1u << 20;

// <a href> or <area href>.
struct HtmlLink {
  std::string href;  // the attribute as written (entities decoded), not resolved
  std::string text;  // visible text: text nodes outside <script>/<style>, white space collapsed, trimmed
};

struct HtmlForm {
  std::string action;               // the attribute as written; empty when absent
  bool has_password_input = false;  // an <input type=password> inside the form
};

struct HtmlScan {
  std::vector<HtmlLink> links;  // document order
  std::vector<HtmlForm> forms;  // document order
  // An <input type=password> that the recovered tree does not place inside a
  // <form> (a form opened inside a table cell and closed elsewhere ends up
  // empty in libxml2's tree while its inputs follow it).
  bool password_input_outside_form = false;
  // What a reader sees: text outside <script>/<style>, white space
  // collapsed, a space between elements; at most kMaxHtmlTextBytes (not
  // counted as truncation: the links and forms are what the checks judge).
  std::string text;
  bool truncated = false;  // a limit above, or a libxml2 abort, cut the scan

  // A password form, whichever way the parser recovered the tree: a form
  // holding a password input, or a document with both a form and a password
  // input.
  bool has_password_form() const;
};

struct HtmlScanOptions {
  // The MIME parser has already converted text/html body parts to UTF-8; an
  // attachment's bytes are as sent, and libxml2 reads its charset from a BOM
  // or <meta charset>.
  bool utf8 = true;
  std::size_t max_links = kMaxHtmlLinks;
};

HtmlScan scan_html(std::string_view html, const HtmlScanOptions& options = {});

}  // namespace mxgate::filter
