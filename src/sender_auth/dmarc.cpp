#include "sender_auth/dmarc.hpp"

#include <libpsl.h>

#include <algorithm>
#include <charconv>

namespace mxgate::sender_auth {
namespace {

constexpr const char* kDebianList = "/usr/share/publicsuffix/public_suffix_list.dafsa";

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<DmarcPolicy> parse_policy(std::string_view value) {
  const std::string v = lower(trim(value));
  if (v == "none") return DmarcPolicy::none;
  if (v == "quarantine") return DmarcPolicy::quarantine;
  if (v == "reject") return DmarcPolicy::reject;
  return std::nullopt;
}

DmarcPolicy milder(DmarcPolicy policy) {
  return policy == DmarcPolicy::reject ? DmarcPolicy::quarantine : DmarcPolicy::none;
}

// The DMARC records among a TXT RRset: exactly one valid one, or an error
// saying why there is no policy.
struct Discovery {
  enum class Outcome { found, none, temperror } outcome = Outcome::none;
  DmarcRecord record;
  std::string reason;
};

Discovery pick(const dns::Answer<std::string>& answer) {
  Discovery d;
  if (answer.status == dns::Status::failure) {
    d.outcome = Discovery::Outcome::temperror;
    d.reason = "DNS failure: " + answer.reason;
    return d;
  }
  std::vector<DmarcRecord> records;
  for (const std::string& text : answer.records) {
    // Section 6.6.3 step 3: only records beginning "v=DMARC1" count.
    if (text.rfind("v=DMARC1", 0) != 0) continue;
    if (auto record = parse_dmarc_record(text)) records.push_back(*record);
  }
  if (records.size() == 1) {
    d.outcome = Discovery::Outcome::found;
    d.record = records.front();
  } else if (records.size() > 1) {
    d.reason = "more than one DMARC record";
  }
  return d;
}

}  // namespace

void PublicSuffixList::Free::operator()(psl_ctx_st* ctx) const { psl_free(ctx); }

Result<PublicSuffixList> PublicSuffixList::load() {
  PublicSuffixList list;
  list.ctx_.reset(psl_load_file(kDebianList));
  list.source_ = kDebianList;
  if (!list.ctx_) {
    // psl_latest: the newer of the built-in list and any system list; its
    // result is ours to free (unlike psl_builtin's).
    list.ctx_.reset(psl_latest(nullptr));
    list.source_ = "libpsl latest";
  }
  if (!list.ctx_) return make_error("dmarc: cannot load the Public Suffix List (package publicsuffix)");
  return list;
}

std::string PublicSuffixList::organizational_domain(std::string_view domain) const {
  std::string name = lower(domain);
  while (!name.empty() && name.back() == '.') name.pop_back();
  const char* registrable = psl_registrable_domain(ctx_.get(), name.c_str());
  return registrable == nullptr ? name : std::string(registrable);
}

std::string_view to_string(DmarcResult result) {
  switch (result) {
    case DmarcResult::none: return "none";
    case DmarcResult::pass: return "pass";
    case DmarcResult::fail: return "fail";
    case DmarcResult::temperror: return "temperror";
    case DmarcResult::permerror: return "permerror";
  }
  return "none";
}

std::string_view to_string(DmarcPolicy policy) {
  switch (policy) {
    case DmarcPolicy::none: return "none";
    case DmarcPolicy::quarantine: return "quarantine";
    case DmarcPolicy::reject: return "reject";
  }
  return "none";
}

Result<DmarcRecord> parse_dmarc_record(std::string_view text) {
  DmarcRecord record;
  bool have_version = false, have_policy = false;
  std::size_t tags = 0;
  while (!text.empty()) {
    if (++tags > 64) return make_error("too many tags");
    const auto semi = text.find(';');
    const std::string_view part = trim(text.substr(0, semi));
    text = semi == std::string_view::npos ? std::string_view() : text.substr(semi + 1);
    if (part.empty()) continue;
    const auto eq = part.find('=');
    if (eq == std::string_view::npos) return make_error("tag without value");
    const std::string tag = lower(trim(part.substr(0, eq)));
    const std::string_view value = trim(part.substr(eq + 1));
    if (!have_version) {
      // Section 6.4: v must be the first tag.
      if (tag != "v" || value != "DMARC1") return make_error("not a DMARC1 record");
      have_version = true;
      continue;
    }
    if (tag == "p") {
      auto policy = parse_policy(value);
      if (!policy) return make_error("bad p=");
      record.policy = *policy;
      have_policy = true;
    } else if (tag == "sp") {
      record.subdomain_policy = parse_policy(value);  // invalid sp= is ignored (section 6.3)
    } else if (tag == "adkim") {
      record.strict_dkim = lower(value) == "s";
    } else if (tag == "aspf") {
      record.strict_spf = lower(value) == "s";
    } else if (tag == "pct") {
      unsigned pct = 100;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), pct);
      if (ec == std::errc() && end == value.data() + value.size() && pct <= 100) record.percent = pct;
    }
    // rua, ruf, fo, rf, ri: reporting, which mxgate does not do (yet).
  }
  if (!have_version) return make_error("not a DMARC1 record");
  if (!have_policy) return make_error("no p= tag");
  return record;
}

bool aligned(std::string_view a, std::string_view b, bool strict, const PublicSuffixList& psl) {
  const std::string x = lower(a), y = lower(b);
  if (x.empty() || y.empty()) return false;
  if (strict) return x == y;
  return psl.organizational_domain(x) == psl.organizational_domain(y);
}

asio::awaitable<DmarcVerdict> check_dmarc(dns::Resolver& resolver, const PublicSuffixList& psl,
                                          std::string from_domain, SpfResult spf, std::string spf_domain,
                                          std::vector<DkimVerdict> dkim) {
  DmarcVerdict verdict;
  verdict.from_domain = lower(from_domain);
  if (verdict.from_domain.empty()) {
    verdict.reason = "no From domain";
    co_return verdict;
  }
  const std::string org = psl.organizational_domain(verdict.from_domain);
  // Names built before the co_await: GCC 12 may destroy temporaries inside
  // a co_await expression twice (see src/dns/resolver.cpp).
  const std::string own_name = "_dmarc." + verdict.from_domain;
  const dns::Answer<std::string> own = co_await resolver.txt(own_name);
  Discovery found = pick(own);
  bool at_org = false;
  if (found.outcome == Discovery::Outcome::none && org != verdict.from_domain) {
    const std::string org_name = "_dmarc." + org;
    const dns::Answer<std::string> at_organization = co_await resolver.txt(org_name);
    found = pick(at_organization);
    at_org = true;
  }
  if (found.outcome == Discovery::Outcome::temperror) {
    verdict.result = DmarcResult::temperror;
    verdict.reason = found.reason;
    co_return verdict;
  }
  if (found.outcome == Discovery::Outcome::none) {
    verdict.reason = found.reason.empty() ? "no DMARC record" : found.reason;
    co_return verdict;
  }
  const DmarcRecord& record = found.record;
  for (const DkimVerdict& signature : dkim) {
    if (signature.result == DkimResult::pass &&
        aligned(signature.domain, verdict.from_domain, record.strict_dkim, psl)) {
      verdict.result = DmarcResult::pass;
      verdict.reason = "aligned DKIM pass (d=" + signature.domain + ")";
      co_return verdict;
    }
  }
  if (spf == SpfResult::pass && aligned(spf_domain, verdict.from_domain, record.strict_spf, psl)) {
    verdict.result = DmarcResult::pass;
    verdict.reason = "aligned SPF pass (" + lower(spf_domain) + ")";
    co_return verdict;
  }
  verdict.result = DmarcResult::fail;
  verdict.reason = "no aligned SPF or DKIM pass";
  // Section 6.6.3: sp= applies when the record was found at the
  // organizational domain for a subdomain's mail.
  verdict.policy = at_org && record.subdomain_policy ? *record.subdomain_policy : record.policy;
  if (record.percent < 100) verdict.policy = milder(verdict.policy);
  co_return verdict;
}

}  // namespace mxgate::sender_auth
