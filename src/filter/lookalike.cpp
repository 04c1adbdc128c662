#include "filter/lookalike.hpp"

#include <idn2.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uspoof.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include <algorithm>
#include <climits>
#include <vector>

#include "filter/url.hpp"

namespace mxgate::filter {
namespace {

std::u16string to_utf16(std::string_view utf8) {
  if (utf8.size() > kMaxSkeletonInput * 4) utf8 = utf8.substr(0, kMaxSkeletonInput * 4);
  std::u16string out(utf8.size() + 1, u'\0');  // UTF-16 never needs more units than UTF-8 bytes
  int32_t length = 0;
  UErrorCode status = U_ZERO_ERROR;
  u_strFromUTF8WithSub(out.data(), static_cast<int32_t>(out.size()), &length, utf8.data(),
                       static_cast<int32_t>(utf8.size()), 0xfffd, nullptr, &status);
  if (U_FAILURE(status)) return {};
  out.resize(static_cast<std::size_t>(length));
  return out;
}

std::string to_utf8(std::u16string_view utf16) {
  std::string out(utf16.size() * 3 + 1, '\0');
  int32_t length = 0;
  UErrorCode status = U_ZERO_ERROR;
  u_strToUTF8WithSub(out.data(), static_cast<int32_t>(out.size()), &length, utf16.data(),
                     static_cast<int32_t>(utf16.size()), 0xfffd, nullptr, &status);
  if (U_FAILURE(status)) return {};
  out.resize(static_cast<std::size_t>(length));
  return out;
}

std::u32string to_utf32(std::u16string_view utf16) {
  std::u32string out;
  out.reserve(utf16.size());
  const auto length = static_cast<int32_t>(utf16.size());
  int32_t i = 0;
  while (i < length) {
    UChar32 c = 0;
    U16_NEXT(utf16.data(), i, length, c);
    out.push_back(static_cast<char32_t>(c));
  }
  return out;
}

// Runs an ICU "fill dest, or tell me the size" function into a u16string.
template <class Fill>
std::u16string with_buffer(std::size_t guess, Fill fill) {
  std::u16string out(guess + 16, u'\0');
  UErrorCode status = U_ZERO_ERROR;
  int32_t length = fill(out.data(), static_cast<int32_t>(out.size()), &status);
  if (status == U_BUFFER_OVERFLOW_ERROR && length > 0) {
    out.assign(static_cast<std::size_t>(length) + 1, u'\0');
    status = U_ZERO_ERROR;
    length = fill(out.data(), static_cast<int32_t>(out.size()), &status);
  }
  if (U_FAILURE(status) || length < 0) return {};
  out.resize(static_cast<std::size_t>(length));
  return out;
}

std::u16string normalize(const UNormalizer2* normalizer, std::u16string_view text) {
  if (normalizer == nullptr) return std::u16string(text);
  return with_buffer(text.size() * 2, [&](UChar* dest, int32_t capacity, UErrorCode* status) {
    return unorm2_normalize(normalizer, text.data(), static_cast<int32_t>(text.size()), dest, capacity,
                            status);
  });
}

const UNormalizer2* nfkc_casefold_instance() {
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* normalizer = unorm2_getNFKCCasefoldInstance(&status);  // owned by ICU, immutable
  return U_FAILURE(status) ? nullptr : normalizer;
}

const UNormalizer2* nfd_instance() {
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* normalizer = unorm2_getNFDInstance(&status);
  return U_FAILURE(status) ? nullptr : normalizer;
}

std::u16string drop_nonspacing_marks(std::u16string_view text) {
  std::u16string out;
  out.reserve(text.size());
  const auto length = static_cast<int32_t>(text.size());
  int32_t i = 0;
  while (i < length) {
    const int32_t start = i;
    UChar32 c = 0;
    U16_NEXT(text.data(), i, length, c);
    if (u_charType(c) == U_NON_SPACING_MARK) continue;
    out.append(text.substr(static_cast<std::size_t>(start), static_cast<std::size_t>(i - start)));
  }
  return out;
}

bool is_ace_label(std::string_view label) {
  return label.size() >= 4 && (label[0] == 'x' || label[0] == 'X') && (label[1] == 'n' || label[1] == 'N') &&
         label[2] == '-' && label[3] == '-';
}

std::u32string code_points(std::string_view utf8) { return to_utf32(to_utf16(utf8)); }

bool is_ip_host(std::string_view host) {
  return host.find(':') != std::string_view::npos || parse_ipv4(host).has_value();
}

std::size_t max_edits_for(std::size_t label_length) {
  if (label_length >= 10) return 2;
  if (label_length >= 5) return 1;
  return 0;
}

}  // namespace

std::string nfkc_casefold(std::string_view utf8) {
  return to_utf8(normalize(nfkc_casefold_instance(), to_utf16(utf8)));
}

std::string to_unicode_domain(std::string_view domain) {
  if (domain.size() > kMaxSkeletonInput) domain = domain.substr(0, kMaxSkeletonInput);
  std::string decoded;
  decoded.reserve(domain.size());
  std::size_t start = 0;
  while (true) {
    const auto dot = domain.find('.', start);
    const std::string_view label =
        domain.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    bool done = false;
    if (is_ace_label(label)) {
      const std::string z(label);  // idn2 wants a NUL-terminated string
      char* unicode = nullptr;
      if (idn2_to_unicode_8z8z(z.c_str(), &unicode, 0) == IDN2_OK && unicode != nullptr) {
        decoded += unicode;
        done = true;
      }
      idn2_free(unicode);
    }
    if (!done) decoded += label;
    if (dot == std::string_view::npos) break;
    decoded.push_back('.');
    start = dot + 1;
  }
  std::string folded = nfkc_casefold(decoded);
  if (!folded.empty() && folded.back() == '.') folded.pop_back();
  return folded;
}

std::size_t edit_distance(std::u32string_view a, std::u32string_view b, std::size_t limit) {
  const std::size_t n = a.size();
  const std::size_t m = b.size();
  if ((n > m ? n - m : m - n) > limit) return limit + 1;
  // Three rows of the optimal-string-alignment table.
  std::vector<std::size_t> before(m + 1), previous(m + 1), current(m + 1);
  for (std::size_t j = 0; j <= m; ++j) previous[j] = j;
  for (std::size_t i = 1; i <= n; ++i) {
    current[0] = i;
    std::size_t row_min = current[0];
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      std::size_t d = std::min({previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d = std::min(d, before[j - 2] + 1);
      current[j] = d;
      row_min = std::min(row_min, d);
    }
    if (row_min > limit) return limit + 1;
    std::swap(before, previous);
    std::swap(previous, current);
  }
  return std::min(previous[m], limit + 1);
}

void ConfusableSkeleton::Close::operator()(USpoofChecker* checker) const { uspoof_close(checker); }

Result<ConfusableSkeleton> ConfusableSkeleton::open() {
  UErrorCode status = U_ZERO_ERROR;
  USpoofChecker* checker = uspoof_open(&status);
  if (U_FAILURE(status)) {
    if (checker != nullptr) uspoof_close(checker);
    return make_error(std::string("uspoof_open: ") + u_errorName(status));
  }
  return ConfusableSkeleton(checker);
}

std::u32string ConfusableSkeleton::skeleton(std::string_view utf8) const {
  if (utf8.size() > kMaxSkeletonInput) utf8 = utf8.substr(0, kMaxSkeletonInput);
  const UNormalizer2* fold = nfkc_casefold_instance();
  auto uspoof = [&](std::u16string_view text) {
    return with_buffer(text.size() * 3, [&](UChar* dest, int32_t capacity, UErrorCode* status) {
      return uspoof_getSkeleton(checker_.get(), 0, text.data(), static_cast<int32_t>(text.size()), dest,
                                capacity, status);
    });
  };
  const std::u16string bare =
      drop_nonspacing_marks(normalize(nfd_instance(), normalize(fold, to_utf16(utf8))));
  return to_utf32(uspoof(normalize(fold, uspoof(bare))));
}

Result<LookalikeMatcher> LookalikeMatcher::create(const std::vector<std::string>& protected_domains) {
  auto skeleton = ConfusableSkeleton::open();
  if (!skeleton) return make_error(skeleton.error());
  LookalikeMatcher matcher(std::move(skeleton).value());
  for (const auto& configured : protected_domains) {
    Protected p;
    p.configured = configured;
    p.unicode = to_unicode_domain(configured);
    if (p.unicode.empty() || is_ip_host(p.unicode)) continue;
    p.suffix = std::string(public_suffix(p.unicode));
    const std::string_view label = registrable_label(p.unicode);
    p.label = code_points(label);
    p.label_skeleton = matcher.skeleton_.skeleton(label);
    p.domain_skeleton = matcher.skeleton_.skeleton(registrable_domain(p.unicode));
    p.max_edits = max_edits_for(p.label.size());
    matcher.protected_.push_back(std::move(p));
  }
  return matcher;
}

bool LookalikeMatcher::is_protected(std::string_view domain) const {
  const std::string unicode = to_unicode_domain(domain);
  return std::any_of(protected_.begin(), protected_.end(),
                     [&](const Protected& p) { return is_same_or_subdomain(unicode, p.unicode); });
}

std::optional<LookalikeMatch> LookalikeMatcher::match(std::string_view domain) const {
  if (protected_.empty() || domain.empty() || domain.size() > kMaxHostLength) return std::nullopt;
  const std::string unicode = to_unicode_domain(domain);
  if (unicode.empty() || is_ip_host(unicode)) return std::nullopt;
  const std::string_view registrable = registrable_domain(unicode);
  for (const auto& p : protected_) {
    // Another name under the same registrable domain has the same owner.
    if (is_same_or_subdomain(unicode, p.unicode) || registrable == registrable_domain(p.unicode)) {
      return std::nullopt;
    }
  }
  const std::string_view label = registrable_label(unicode);
  if (label.empty()) return std::nullopt;
  const std::string_view suffix = public_suffix(unicode);
  const std::u32string domain_skeleton = skeleton_.skeleton(registrable);
  const std::u32string label_skeleton = skeleton_.skeleton(label);
  const std::u32string label_chars = code_points(label);

  for (const auto& p : protected_) {
    if (domain_skeleton == p.domain_skeleton) return LookalikeMatch{p.configured, "confusable characters"};
    if (!label_skeleton.empty() && label_skeleton == p.label_skeleton) {
      return LookalikeMatch{p.configured, "same name under another suffix"};
    }
    if (p.max_edits == 0 || suffix != p.suffix || label_chars.size() > kMaxEditDistanceLabel) continue;
    const std::size_t edits = std::min(edit_distance(label_chars, p.label, p.max_edits),
                                       edit_distance(label_skeleton, p.label_skeleton, p.max_edits));
    if (edits <= p.max_edits) {
      return LookalikeMatch{p.configured, std::to_string(edits) + (edits == 1 ? " edit" : " edits")};
    }
  }
  return std::nullopt;
}

}  // namespace mxgate::filter
