#include "filter/impersonation.hpp"

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "filter/lookalike.hpp"
#include "filter/url.hpp"

namespace mxgate::filter {
namespace {

constexpr Category kCategory = Category::impersonation;

// Consumer mailbox providers: anyone can open "alice.martin.ceo@" there.
constexpr std::array<std::string_view, 30> kFreeMailDomains = {
    "gmail.com",  "googlemail.com", "outlook.com", "hotmail.com", "hotmail.co.uk", "hotmail.fr",
    "live.com",   "msn.com",        "yahoo.com",   "yahoo.co.uk", "yahoo.fr",      "ymail.com",
    "aol.com",    "icloud.com",     "me.com",      "mac.com",     "proton.me",     "protonmail.com",
    "pm.me",      "gmx.com",        "gmx.net",     "gmx.de",      "web.de",        "mail.com",
    "yandex.com", "yandex.ru",      "mail.ru",     "zoho.com",    "tutanota.com",  "fastmail.com"};

// At most this many words of a display name are compared.
constexpr std::size_t kMaxNameWords = 64;

using Words = std::vector<std::u32string>;

// The words of a name, each as a comparison skeleton.
Words name_words(std::string_view name, const ConfusableSkeleton& skeletons) {
  const std::string folded = nfkc_casefold(name.substr(0, std::min(name.size(), kMaxSkeletonInput)));
  Words words;
  const auto* bytes = reinterpret_cast<const uint8_t*>(folded.data());
  const auto length = static_cast<int32_t>(folded.size());
  int32_t i = 0;
  int32_t word_start = -1;
  auto end_word = [&](int32_t end) {
    if (word_start >= 0 && words.size() < kMaxNameWords) {
      words.push_back(skeletons.skeleton(std::string_view(folded).substr(
          static_cast<std::size_t>(word_start), static_cast<std::size_t>(end - word_start))));
    }
    word_start = -1;
  };
  while (i < length) {
    const int32_t start = i;
    UChar32 c = 0;
    U8_NEXT(bytes, i, length, c);
    const bool in_word = c >= 0 && (u_isalnum(c) || (U_GET_GC_MASK(c) & U_GC_M_MASK) != 0);
    if (in_word) {
      if (word_start < 0) word_start = start;
    } else {
      end_word(start);
    }
  }
  end_word(length);
  return words;
}

struct ProtectedName {
  std::string configured;
  Words words;
  Words last_first;  // "Martin Alice" for "Alice Martin"
};

bool run_at(const Words& display, std::size_t at, const Words& name) {
  return std::equal(name.begin(), name.end(), display.begin() + static_cast<std::ptrdiff_t>(at));
}

// The protected name the display name claims, or nullptr.
const ProtectedName* claimed_name(const Words& display, const std::vector<ProtectedName>& names,
                                  const std::u32string& via) {
  for (const auto& name : names) {
    const std::size_t n = name.words.size();
    if (n == 0 || n > display.size()) continue;
    if (n == 1) {
      if (display.size() == 1 && display[0] == name.words[0]) return &name;
      continue;
    }
    for (std::size_t at = 0; at + n <= display.size(); ++at) {
      if (!run_at(display, at, name.words) && !run_at(display, at, name.last_first)) continue;
      if (at + n < display.size() && display[at + n] == via) continue;
      return &name;
    }
  }
  return nullptr;
}

bool is_free_mail(std::string_view domain) {
  return std::find(kFreeMailDomains.begin(), kFreeMailDomains.end(), registrable_domain(domain)) !=
         kFreeMailDomains.end();
}

std::string registrable_of(std::string_view domain) {
  return std::string(registrable_domain(to_unicode_domain(domain)));
}

// Attacker text for a log line: control characters replaced.
std::string printable(std::string_view text) {
  std::string out(text.substr(0, std::min<std::size_t>(text.size(), 200)));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return out;
}

}  // namespace

Findings check_impersonation(const ParsedMessage& message, const ContentPolicy& policy) {
  Findings out;
  if (!message.from) return out;
  auto created = LookalikeMatcher::create(policy.protected_domains);
  if (!created) {
    out.fail("impersonation", created.error());
    return out;
  }
  const LookalikeMatcher& matcher = created.value();
  const ConfusableSkeleton& skeletons = matcher.skeletons();
  const Mailbox& from = *message.from;

  std::vector<ProtectedName> names;
  for (const auto& configured : policy.protected_names) {
    ProtectedName name{configured, name_words(configured, skeletons), {}};
    if (name.words.empty()) continue;
    name.last_first.push_back(name.words.back());
    name.last_first.insert(name.last_first.end(), name.words.begin(), name.words.end() - 1);
    names.push_back(std::move(name));
  }
  const ProtectedName* claimed =
      from.display_name.empty()
          ? nullptr
          : claimed_name(name_words(from.display_name, skeletons), names, skeletons.skeleton("via"));
  const bool from_protected = !from.domain.empty() && matcher.is_protected(from.domain);
  const std::string sender = "\"" + printable(from.display_name) + "\" <" + printable(from.address) + ">";

  if (claimed != nullptr && !from_protected) {
    out.add(kCategory, "PROTECTED_NAME_EXTERNAL", 1.0,
            "From " + sender + " uses the protected name " + claimed->configured +
                " outside the protected domains");
  }

  // LOOKALIKE_FROM_DOMAIN: From first, then each Reply-To.
  std::vector<std::pair<std::string_view, const Mailbox*>> senders{{"From", &from}};
  for (const auto& mailbox : message.reply_to) senders.emplace_back("Reply-To", &mailbox);
  for (const auto& [field, mailbox] : senders) {
    if (mailbox->domain.empty()) continue;
    if (const auto match = matcher.match(mailbox->domain)) {
      out.add(kCategory, "LOOKALIKE_FROM_DOMAIN", 1.0,
              std::string(field) + " domain " + printable(mailbox->domain) + " imitates " +
                  match->protected_domain + " (" + match->reason + ")");
      break;
    }
  }

  // REPLY_TO_MISMATCH: the strongest Reply-To decides the score.
  const std::string from_registrable = registrable_of(from.domain);
  double best_score = 0;
  std::string best_detail;
  for (const auto& reply_to : message.reply_to) {
    if (reply_to.domain.empty() || registrable_of(reply_to.domain) == from_registrable) continue;
    double score = 0.3;
    std::string why =
        "Reply-To " + printable(reply_to.address) + " is outside the From domain " + printable(from.domain);
    if (claimed != nullptr) {
      score = 1.0;
      why += ", under the protected name " + claimed->configured;
    } else if (from_protected && is_free_mail(to_unicode_domain(reply_to.domain))) {
      score = 1.0;
      why += ", at a free-mail provider";
    }
    if (score > best_score) {
      best_score = score;
      best_detail = std::move(why);
    }
  }
  if (best_score > 0) out.add(kCategory, "REPLY_TO_MISMATCH", best_score, std::move(best_detail));
  return out;
}

}  // namespace mxgate::filter
