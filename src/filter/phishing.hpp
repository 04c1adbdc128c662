// Phishing: links and forms that send a reader somewhere other than where
// they appear to go, or ask for a password.
//
// check_phishing() reports Category::phishing findings; the category acts at
// a summed score of 1.0, so a sign that is phishing on its own scores 1.0 and
// a sign that legitimate mail also shows scores less.  Each rule is reported
// once per message, with the first offending URL in its detail.  URLs are
// taken from the text body (url.hpp: find_urls), the links and form actions
// of the HTML body, and those of HTML attachments, in that order.
//
//   LINK_TEXT_MISMATCH    1.0  the visible text of a link is a URL or domain
//                              ("www.bank.test", "https://bank.test/login")
//                              in another registrable domain than its href
//                              (subdomains and http/https of one domain are
//                              the same).  Click-tracking redirectors of mass
//                              mailers also fire this; an allow list of
//                              redirect hosts belongs in the policy.
//   LOOKALIKE_URL         1.0  a URL host is a look-alike of a protected
//                              domain (lookalike.hpp).
//   IP_URL                0.5  a URL host is an IP address in any notation
//                              ("http://3232235777/", "http://0x7f.1/").
//   PUNYCODE_URL          0.5  a URL host has an "xn--" label or non-ASCII
//                              characters and is not a protected domain.
//   URL_SHORTENER         0.3  a URL host is a public link shortener
//                              (kUrlShorteners in phishing.cpp) that hides
//                              the destination.
//   HTML_PASSWORD_FORM    1.0  an HTML attachment (name .htm, .html, .shtml,
//                              .xhtml; type text/html or application/xhtml+xml;
//                              or any attachment containing "<form") holds a
//                              form with a password input: the credential
//                              page delivered as a file, which no legitimate
//                              sender mails.
//   BODY_PASSWORD_FORM    0.7  the HTML body itself holds a password form.
//                              Mail clients mostly refuse to submit forms and
//                              some old forum digests carry a login box, so
//                              this alone does not act; with any other sign
//                              above it does.
//
// Limits: more than kMaxTextUrls text URLs (url.hpp), or an HTML document cut
// short by html_links.hpp's limits (kMaxHtmlLinks links, kMaxHtmlForms forms,
// libxml2 giving up), stop the scan there; the check then reports a failure
// (the message is not known to be clean and follows [filter] on_failure)
// besides its findings.
// Not covered: forms built by script (document.write of an encoded page),
// <base href> (relative links have no host to judge), URLs in PDF and
// Office attachments, and a protected domain used as a subdomain of another
// one ("example.test.evil.test").
#pragma once

#include <string>
#include <vector>

#include "filter/finding.hpp"
#include "filter/parsed_message.hpp"

namespace mxgate::filter {

// What the phishing and impersonation checks protect; from the [filter]
// configuration.  Shared by impersonation.hpp.
struct ContentPolicy {
  std::vector<std::string> protected_domains;  // lower case, e.g. "example.test"
  std::vector<std::string> protected_names;    // "Alice Martin"
};

Findings check_phishing(const ParsedMessage& message, const ContentPolicy& policy);

}  // namespace mxgate::filter
