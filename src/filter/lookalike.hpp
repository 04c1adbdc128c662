// Look-alike domains: names registered to be mistaken for one of the
// operator's protected domains ("exarnple.test", "examp1e.test",
// "exämple.test" for "example.test").
//
// A reader compares what a name looks like, so names are compared in the
// form a mail client or browser displays and after mapping characters that
// look alike to one prototype:
//   - IDNA (RFC 5891): "xn--" labels are decoded to Unicode with libidn2
//     (idn2_to_unicode_8z8z); a label that does not decode stays as written.
//     The result is NFKC_Casefold-normalised (the UTS #46 mapping step, close
//     enough for comparison), so full-width and upper-case forms meet the
//     plain ones.
//   - Confusables (UTS #39 section 4, "skeleton"): the ICU USpoofChecker maps
//     "rn" and "m", "1" and "l", Cyrillic "а" and Latin "a" to one skeleton.
//     The skeleton is not case-insensitive ("0" becomes "O"), so the text is
//     case-folded before and after it; combining marks are dropped first
//     ("ä" compares as "a"), which UTS #39 does not do but a glance at a
//     From line does.
//   - Typos: the restricted Damerau-Levenshtein distance (one edit is an
//     insertion, deletion, substitution or swap of neighbours) between the
//     labels left of the public suffix, when both domains share the suffix:
//     at most 1 for protected labels of 5 to 9 characters, at most 2 from 10
//     characters; shorter labels match only by skeleton (every 3-letter name
//     is one edit from hundreds of others).
// A domain is a look-alike when its registrable domain has the skeleton of a
// protected one, its registrable label has the skeleton of a protected label
// under another suffix ("example.co" for "example.com"), or it is within the
// edit distance above.  A protected domain and its subdomains never are.
// The public suffix is approximated (see url.hpp) until libpsl arrives.
//
// ICU's USpoofChecker is not global state here: a ConfusableSkeleton owns
// one, and its const members may be shared by threads (ICU documents the
// checker as thread-safe once configured).
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.hpp"

struct USpoofChecker;

namespace mxgate::filter {

// Longer labels are not compared by edit distance (DNS labels are at most 63
// octets, RFC 1035 section 2.3.4; a longer one cannot be a working domain).
inline constexpr std::size_t kMaxEditDistanceLabel = 63;
// Text passed to ConfusableSkeleton::skeleton() is cut at this many bytes.
inline constexpr std::size_t kMaxSkeletonInput = 4096;

// NFKC_Casefold of UTF-8 text; ill-formed UTF-8 becomes U+FFFD.
std::string nfkc_casefold(std::string_view utf8);

// The display form of a domain: "xn--" labels decoded (RFC 5891 section 5),
// then NFKC_Casefold; a trailing dot removed.  Labels that fail to decode
// are kept as written.
std::string to_unicode_domain(std::string_view domain);

// Restricted Damerau-Levenshtein (optimal string alignment) distance between
// two code point strings, counted up to limit + 1: returns limit + 1 as soon
// as the distance is known to exceed limit.
std::size_t edit_distance(std::u32string_view a, std::u32string_view b, std::size_t limit);

// Owns an ICU spoof checker; computes comparison skeletons.
class ConfusableSkeleton {
 public:
  // Fails when ICU cannot load its confusables data.
  static Result<ConfusableSkeleton> open();

  // Case-folded, mark-free UTS #39 skeleton of UTF-8 text (see the header
  // comment): equal skeletons mean "looks the same".
  std::u32string skeleton(std::string_view utf8) const;

 private:
  struct Close {
    void operator()(USpoofChecker* checker) const;
  };
  explicit ConfusableSkeleton(USpoofChecker* checker) : checker_(checker) {}
  std::unique_ptr<USpoofChecker, Close> checker_;
};

struct LookalikeMatch {
  std::string protected_domain;  // as configured
  std::string reason;            // "confusable characters", "same name under another suffix", "N edit(s)"
};

// The protected domains, prepared once per check for comparing many hosts.
class LookalikeMatcher {
 public:
  static Result<LookalikeMatcher> create(const std::vector<std::string>& protected_domains);

  // Which protected domain domain imitates, if any.  domain may be A-labels,
  // U-labels or mixed, any case.  IP literals never match.
  std::optional<LookalikeMatch> match(std::string_view domain) const;

  // True when domain is a protected domain or a subdomain of one, compared
  // in display form.
  bool is_protected(std::string_view domain) const;

  const ConfusableSkeleton& skeletons() const { return skeleton_; }

 private:
  struct Protected {
    std::string configured;
    std::string unicode;   // to_unicode_domain(configured)
    std::string suffix;    // public_suffix(unicode)
    std::u32string label;  // registrable_label(unicode), code points
    std::u32string label_skeleton;
    std::u32string domain_skeleton;  // of registrable_domain(unicode)
    std::size_t max_edits = 0;
  };
  explicit LookalikeMatcher(ConfusableSkeleton skeleton) : skeleton_(std::move(skeleton)) {}

  ConfusableSkeleton skeleton_;
  std::vector<Protected> protected_;
};

}  // namespace mxgate::filter
