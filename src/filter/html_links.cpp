#include "filter/html_links.hpp"

#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
#include <libxml/xmlmemory.h>

#include <climits>
#include <cstdint>
#include <memory>

namespace mxgate::filter {
namespace {

struct XmlDocFree {
  void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};
using XmlDocPtr = std::unique_ptr<xmlDoc, XmlDocFree>;

struct XmlCharFree {
  void operator()(xmlChar* text) const { xmlFree(text); }
};
using XmlCharPtr = std::unique_ptr<xmlChar, XmlCharFree>;

struct HtmlParserCtxtFree {
  void operator()(htmlParserCtxt* context) const { htmlFreeParserCtxt(context); }
};
using HtmlParserCtxtPtr = std::unique_ptr<htmlParserCtxt, HtmlParserCtxtFree>;

// XML_PARSE_HUGE lifts libxml2's nesting limit of 256 elements: past it the
// parser abandons the rest of the document, and a browser does not, so 300
// <div>s around a link would hide it.  The walk below is iterative and
// libxml2 2.9.11+ frees trees iteratively, so depth costs no stack.
constexpr int kParseOptions =
    HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_NONET | HTML_PARSE_RECOVER | XML_PARSE_HUGE;

bool is_element(const xmlNode* node, const char* name) {
  return node->type == XML_ELEMENT_NODE && node->name != nullptr &&
         xmlStrcasecmp(node->name, reinterpret_cast<const xmlChar*>(name)) == 0;
}

// Copies the attribute's value (entities decoded) into out; false when absent.
bool attribute(xmlNode* node, const char* name, std::string& out) {
  XmlCharPtr value(xmlGetProp(node, reinterpret_cast<const xmlChar*>(name)));
  if (!value) return false;
  out.assign(reinterpret_cast<const char*>(value.get()));
  return true;
}

bool is_password_input(xmlNode* node) {
  if (!is_element(node, "input")) return false;
  std::string type;
  if (!attribute(node, "type", type)) return false;
  std::size_t b = 0;
  std::size_t e = type.size();
  while (b < e && static_cast<unsigned char>(type[b]) <= 0x20) ++b;
  while (e > b && static_cast<unsigned char>(type[e - 1]) <= 0x20) --e;
  return xmlStrcasecmp(reinterpret_cast<const xmlChar*>(type.substr(b, e - b).c_str()),
                       reinterpret_cast<const xmlChar*>("password")) == 0;
}

bool is_document(const xmlNode* node) {
  return node->type == XML_DOCUMENT_NODE || node->type == XML_HTML_DOCUMENT_NODE;
}

// Appends text to out with white space runs (ASCII, and U+00A0) collapsed to
// one space; stops at max bytes.
void append_collapsed(std::string& out, const char* text, std::size_t max) {
  for (const char* p = text; *p != '\0' && out.size() < max; ++p) {
    const auto c = static_cast<unsigned char>(*p);
    bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
    if (c == 0xc2 && static_cast<unsigned char>(p[1]) == 0xa0) {
      space = true;
      ++p;
    }
    if (space) {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
}

// Trailing space dropped; a byte cut at max may have split a UTF-8
// sequence: the partial one is dropped.
void finish_text(std::string& text, std::size_t max) {
  while (!text.empty() && text.back() == ' ') text.pop_back();
  if (text.size() >= max) {
    std::size_t keep = text.size();
    while (keep > 0 && (static_cast<unsigned char>(text[keep - 1]) & 0xc0) == 0x80) --keep;
    if (keep > 0 && static_cast<unsigned char>(text[keep - 1]) >= 0xc0) text.resize(keep - 1);
  }
}

// Visible text under link: text and CDATA nodes, not inside script or style.
std::string visible_text(xmlNode* link) {
  std::string text;
  std::size_t visited = 0;
  xmlNode* node = link->children;
  while (node != nullptr && node != link && visited < kMaxLinkTextNodes && text.size() < kMaxLinkTextBytes) {
    ++visited;
    if ((node->type == XML_TEXT_NODE || node->type == XML_CDATA_SECTION_NODE) && node->content != nullptr) {
      append_collapsed(text, reinterpret_cast<const char*>(node->content), kMaxLinkTextBytes);
    }
    const bool hidden = is_element(node, "script") || is_element(node, "style");
    if (node->children != nullptr && !hidden) {
      node = node->children;
      continue;
    }
    while (node != nullptr && node != link) {
      if (node->next != nullptr) {
        node = node->next;
        break;
      }
      node = node->parent;
    }
  }
  finish_text(text, kMaxLinkTextBytes);
  return text;
}

}  // namespace

bool HtmlScan::has_password_form() const {
  for (const auto& form : forms) {
    if (form.has_password_input) return true;
  }
  return password_input_outside_form && !forms.empty();
}

HtmlScan scan_html(std::string_view html, const HtmlScanOptions& options) {
  HtmlScan scan;
  if (html.empty()) return scan;
  std::size_t size = html.size();
  if (size > static_cast<std::size_t>(INT_MAX)) {
    size = static_cast<std::size_t>(INT_MAX);
    scan.truncated = true;
  }
  const HtmlParserCtxtPtr context(htmlNewParserCtxt());
  if (!context) {
    scan.truncated = true;  // out of memory: nothing was scanned
    return scan;
  }
  const XmlDocPtr doc(htmlCtxtReadMemory(context.get(), html.data(), static_cast<int>(size), nullptr,
                                         options.utf8 ? "UTF-8" : nullptr, kParseOptions));
  // libxml2 stops (and disables its SAX callbacks) on an error it cannot
  // recover from; what follows that point was never parsed.
  if (context->disableSAX != 0) scan.truncated = true;
  if (!doc) return scan;

  // Forms enclosing the current node, innermost last, as indexes into scan.forms
  // (or SIZE_MAX for a form past kMaxHtmlForms).
  std::vector<std::pair<xmlNode*, std::size_t>> open_forms;
  xmlNode* node = doc->children;
  while (node != nullptr) {
    bool descend = true;
    if ((node->type == XML_TEXT_NODE || node->type == XML_CDATA_SECTION_NODE) && node->content != nullptr) {
      append_collapsed(scan.text, reinterpret_cast<const char*>(node->content), kMaxHtmlTextBytes);
    } else if (node->type == XML_ELEMENT_NODE && !scan.text.empty() && scan.text.back() != ' ' &&
               scan.text.size() < kMaxHtmlTextBytes) {
      scan.text.push_back(' ');  // "<td>a</td><td>b</td>" reads as two words
    }
    if (is_element(node, "a") || is_element(node, "area")) {
      std::string href;
      if (attribute(node, "href", href)) {
        if (scan.links.size() < options.max_links) {
          scan.links.push_back(HtmlLink{std::move(href), visible_text(node)});
        } else {
          scan.truncated = true;
        }
      }
    } else if (is_element(node, "form")) {
      std::size_t index = SIZE_MAX;
      if (scan.forms.size() < kMaxHtmlForms) {
        index = scan.forms.size();
        scan.forms.emplace_back();
        attribute(node, "action", scan.forms.back().action);
      } else {
        scan.truncated = true;
      }
      open_forms.emplace_back(node, index);
    } else if (is_password_input(node)) {
      if (open_forms.empty()) {
        scan.password_input_outside_form = true;
      } else if (open_forms.back().second != SIZE_MAX) {
        scan.forms[open_forms.back().second].has_password_input = true;
      }
    } else if (is_element(node, "script") || is_element(node, "style")) {
      descend = false;
    }

    if (descend && node->children != nullptr) {
      node = node->children;
      continue;
    }
    while (node != nullptr) {
      if (!open_forms.empty() && open_forms.back().first == node) open_forms.pop_back();
      if (node->next != nullptr) {
        node = node->next;
        break;
      }
      node = node->parent;
      if (node != nullptr && is_document(node)) node = nullptr;
    }
  }
  finish_text(scan.text, kMaxHtmlTextBytes);
  return scan;
}

}  // namespace mxgate::filter
