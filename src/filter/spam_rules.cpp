#include "filter/spam_rules.hpp"

namespace mxgate::filter {
namespace {

// Split in two so this source file is not itself a GTUBE message.
constexpr std::string_view kGtubeHead = "XJS*C4JDBQADN1.NSBN3*2IDNEN*";
constexpr std::string_view kGtubeTail = "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

bool has_gtube(std::string_view text) {
  for (auto at = text.find(kGtubeHead); at != std::string_view::npos; at = text.find(kGtubeHead, at + 1)) {
    if (text.substr(at + kGtubeHead.size(), kGtubeTail.size()) == kGtubeTail) return true;
  }
  return false;
}

}  // namespace

Findings check_spam_rules(std::string_view content, const ParsedMessage& message) {
  Findings out;
  // The raw content covers a plain message; the decoded bodies cover GTUBE
  // sent base64- or quoted-printable-encoded.
  if (has_gtube(content) || has_gtube(message.text) || has_gtube(message.html))
    out.add(Category::spam, "GTUBE", kGtubeScore, "GTUBE test string");
  return out;
}

}  // namespace mxgate::filter
