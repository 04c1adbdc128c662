#include "filter/phishing.hpp"

#include <unicode/utf8.h>

#include <algorithm>
#include <array>
#include <optional>
#include <string_view>
#include <unordered_set>

#include "filter/html_links.hpp"
#include "filter/lookalike.hpp"
#include "filter/url.hpp"

namespace mxgate::filter {
namespace {

constexpr Category kCategory = Category::phishing;

// Public shorteners whose links reveal nothing of their destination.
constexpr std::array<std::string_view, 22> kUrlShorteners = {
    "bit.ly",  "bitly.com",  "tinyurl.com", "t.co",        "goo.gl",    "ow.ly",   "is.gd", "v.gd",
    "buff.ly", "rebrand.ly", "cutt.ly",     "shorturl.at", "tiny.cc",   "rb.gy",   "t.ly",  "s.id",
    "bl.ink",  "lnkd.in",    "qrco.de",     "adf.ly",      "shorte.st", "tiny.one"};

// Link texts like "report.pdf" look like domains but name files.
constexpr std::array<std::string_view, 24> kFileExtensions = {
    "pdf", "doc",  "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "txt", "csv", "rtf",
    "htm", "html", "php",  "asp", "aspx", "jpg", "jpeg", "png", "gif", "exe", "msg", "eml"};

constexpr std::size_t kMaxDetailBytes = 200;

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
bool is_alnum(char c) { return (c >= '0' && c <= '9') || (lower(c) >= 'a' && lower(c) <= 'z'); }

std::string to_lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), lower);
  return out;
}

bool contains_ci(std::string_view haystack, std::string_view lower_needle) {
  return std::search(haystack.begin(), haystack.end(), lower_needle.begin(), lower_needle.end(),
                     [](char a, char b) { return lower(a) == b; }) != haystack.end();
}

// Attacker text made safe for one log line: controls, and bytes that are not
// well-formed UTF-8, as %XX; cut at kMaxDetailBytes.
std::string for_log(std::string_view text) {
  std::string out;
  const auto length = static_cast<int32_t>(std::min<std::size_t>(text.size(), kMaxDetailBytes));
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  int32_t i = 0;
  while (i < length) {
    const int32_t start = i;
    UChar32 c = 0;
    U8_NEXT(bytes, i, length, c);
    if (c < 0x20 || c == 0x7f || c == '%') {
      for (int32_t k = start; k < i; ++k) {
        static constexpr char kHex[] = "0123456789ABCDEF";
        out.push_back('%');
        out.push_back(kHex[bytes[k] >> 4]);
        out.push_back(kHex[bytes[k] & 0xf]);
      }
    } else {
      out.append(text.substr(static_cast<std::size_t>(start), static_cast<std::size_t>(i - start)));
    }
  }
  if (text.size() > kMaxDetailBytes) out += "...";
  return out;
}

bool is_shortener(std::string_view host) {
  return std::any_of(kUrlShorteners.begin(), kUrlShorteners.end(),
                     [&](std::string_view s) { return is_same_or_subdomain(host, s); });
}

// A bare domain as link text: "bank.test" or "bank.test/login".  At least two
// labels of letters, digits, '-' or non-ASCII; the last not a digit string
// nor a file extension.
bool looks_like_bare_domain(std::string_view text) {
  const std::string_view host = text.substr(0, text.find('/'));
  if (host.empty() || host.find('.') == std::string_view::npos) return false;
  std::size_t start = 0;
  std::string_view last;
  while (true) {
    const auto dot = host.find('.', start);
    const std::string_view label =
        host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty()) return false;
    for (const char c : label) {
      const auto u = static_cast<unsigned char>(c);
      if (!(is_alnum(c) || c == '-' || u >= 0x80)) return false;
    }
    last = label;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (last.size() < 2 || std::all_of(last.begin(), last.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return host.find_first_not_of("0123456789.") == std::string_view::npos;  // a dotted IP is a shown host
  }
  const std::string tld = to_lower(last);
  return std::find(kFileExtensions.begin(), kFileExtensions.end(), tld) == kFileExtensions.end();
}

// The host that a link's visible text shows, when the text is a URL or domain.
std::optional<ParsedUrl> shown_host(std::string_view text) {
  // "<https://bank.test>" and "\"bank.test\"" show the same host.
  const auto first = text.find_first_not_of(" <\"");
  if (first == std::string_view::npos) return std::nullopt;
  text = text.substr(first, text.find_last_not_of(" >\"") - first + 1);
  if (text.find_first_of(" \t\r\n") != std::string_view::npos) return std::nullopt;
  const std::string lowered = to_lower(text.substr(0, 8));
  if (lowered.starts_with("http://") || lowered.starts_with("https://") || lowered.starts_with("www.")) {
    return parse_url(text);
  }
  // An e-mail address or a "word: value" text is not a domain.
  if (text.find_first_of("@:") != std::string_view::npos || !looks_like_bare_domain(text))
    return std::nullopt;
  return parse_url("http://" + std::string(text));
}

std::string comparable_registrable(const ParsedUrl& url) {
  if (url.ip_literal) return url.host;
  return std::string(registrable_domain(to_unicode_domain(url.host)));
}

bool is_html_attachment(const Part& part) {
  const std::string name = to_lower(part.filename);
  for (const std::string_view ext : {".htm", ".html", ".shtml", ".xhtml"}) {
    if (name.ends_with(ext)) return true;
  }
  if (part.content_type == "text/html" || part.content_type == "application/xhtml+xml") return true;
  // A form element can only come from this tag (in any ASCII-compatible charset).
  return contains_ci(part.data, "<form");
}

class PhishingScan {
 public:
  PhishingScan(const ContentPolicy& policy, Findings& out) : policy_(policy), out_(out) {
    auto matcher = LookalikeMatcher::create(policy.protected_domains);
    if (matcher) {
      matcher_.emplace(std::move(matcher).value());
    } else {
      out_.fail("phishing", "look-alike URLs not checked: " + matcher.error());
    }
  }

  void text_urls(std::string_view text) {
    const FoundUrls found = find_urls(text);
    if (found.truncated) limit("more than " + std::to_string(kMaxTextUrls) + " URLs in the text body");
    for (const auto& url : found.urls) check_url(url, "text URL");
  }

  // attachment: a password form there is the definite sign.
  void html(const HtmlScan& scan, bool attachment, std::string_view where) {
    if (scan.truncated) limit("HTML limits reached in the " + std::string(where));
    for (const auto& link : scan.links) {
      check_link_text(link, where);
      check_url(link.href, std::string(where) + " link");
    }
    for (const auto& form : scan.forms) check_url(form.action, std::string(where) + " form action");
    if (scan.has_password_form()) {
      if (attachment) {
        fire("HTML_PASSWORD_FORM", 1.0, "a form with a password input in the " + std::string(where));
      } else {
        fire("BODY_PASSWORD_FORM", 0.7, "a form with a password input in the HTML body");
      }
    }
  }

 private:
  void fire(std::string_view rule, double score, std::string detail) {
    if (!fired_.insert(std::string(rule)).second) return;
    out_.add(kCategory, std::string(rule), score, std::move(detail));
  }

  void limit(std::string reason) {
    if (limited_) return;
    limited_ = true;
    out_.fail("phishing", std::move(reason) + "; the rest was not checked");
  }

  bool is_protected(std::string_view host) const {
    if (matcher_) return matcher_->is_protected(host);
    return std::any_of(policy_.protected_domains.begin(), policy_.protected_domains.end(),
                       [&](const std::string& d) { return is_same_or_subdomain(host, d); });
  }

  void check_url(std::string_view url, std::string_view where) {
    const auto parsed = parse_url(url);
    if (!parsed || !hosts_seen_.insert(parsed->host).second) return;
    const std::string& host = parsed->host;
    const std::string shown = std::string(where) + " " + for_log(url);
    if (parsed->ip_literal) {
      fire("IP_URL", 0.5, shown + ": the host is an IP address");
      return;
    }
    if (is_internationalized_host(host) && !is_protected(host)) {
      fire("PUNYCODE_URL", 0.5, shown + ": internationalised host " + for_log(to_unicode_domain(host)));
    }
    if (is_shortener(host)) fire("URL_SHORTENER", 0.3, shown + ": a link shortener hides the destination");
    if (matcher_) {
      if (const auto match = matcher_->match(host)) {
        fire("LOOKALIKE_URL", 1.0,
             shown + ": " + for_log(host) + " imitates " + match->protected_domain + " (" + match->reason +
                 ")");
      }
    }
  }

  void check_link_text(const HtmlLink& link, std::string_view where) {
    if (fired_.contains("LINK_TEXT_MISMATCH")) return;
    const auto shown = shown_host(link.text);
    if (!shown) return;
    const auto target = parse_url(link.href);
    if (!target) return;
    const std::string shown_domain = comparable_registrable(*shown);
    const std::string target_domain = comparable_registrable(*target);
    if (shown_domain == target_domain) return;
    fire("LINK_TEXT_MISMATCH", 1.0,
         std::string(where) + " link shows " + for_log(shown_domain) + " but goes to " +
             for_log(target_domain) + " (" + for_log(link.href) + ")");
  }

  const ContentPolicy& policy_;
  Findings& out_;
  std::optional<LookalikeMatcher> matcher_;
  std::unordered_set<std::string> fired_;
  std::unordered_set<std::string> hosts_seen_;
  bool limited_ = false;
};

}  // namespace

Findings check_phishing(const ParsedMessage& message, const ContentPolicy& policy) {
  Findings out;
  PhishingScan scan(policy, out);
  scan.text_urls(message.text);
  scan.html(message.html_body, /*attachment=*/false, "HTML body");
  for (const auto& part : message.parts) {
    if (!part.attachment || !is_html_attachment(part)) continue;
    const std::string where =
        "attachment " + (part.filename.empty() ? part.content_type : for_log(part.filename));
    // Bytes as sent: libxml2 reads the charset from a BOM or <meta charset>.
    scan.html(scan_html(part.data, HtmlScanOptions{.utf8 = false}), /*attachment=*/true, where);
  }
  return out;
}

}  // namespace mxgate::filter
