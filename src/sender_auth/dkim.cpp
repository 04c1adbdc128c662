#include "sender_auth/dkim.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <limits>
#include <memory>
#include <utility>

namespace mxgate::sender_auth {
namespace {

constexpr std::string_view kCrlf = "\r\n";
constexpr std::size_t kSha256Size = 32;
constexpr std::size_t kEd25519KeySize = 32;
// RFC 1035 section 2.3.4 (without the root label's length octet and dot).
constexpr std::size_t kMaxDnsName = 253;
constexpr std::size_t kMaxDnsLabel = 63;
constexpr std::size_t kBPrefixLength = 8;  // RFC 6008 section 4

// ---- Characters and strings ----

bool is_wsp(char c) { return c == ' ' || c == '\t'; }
// FWS as it appears in a header value or a TXT record: WSP and line ends.
bool is_fws(char c) { return is_wsp(c) || c == '\r' || c == '\n'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string to_lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), lower);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim_fws(std::string_view text) {
  while (!text.empty() && is_fws(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_fws(text.back())) text.remove_suffix(1);
  return text;
}

std::string strip_fws(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (!is_fws(c)) out += c;
  }
  return out;
}

// Splits on `separator` and trims FWS around each piece.
std::vector<std::string_view> split_list(std::string_view text, char separator) {
  std::vector<std::string_view> out;
  while (true) {
    const std::size_t at = text.find(separator);
    out.push_back(trim_fws(text.substr(0, at)));
    if (at == std::string_view::npos) break;
    text.remove_prefix(at + 1);
  }
  return out;
}

// Decimal digits only; values beyond UINT64_MAX saturate.
std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::uint64_t value = 0;
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  for (const char c : text) {
    if (!is_digit(c)) return std::nullopt;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    value = (value > (kMax - digit) / 10) ? kMax : value * 10 + digit;
  }
  return value;
}

// A DNS name as d= and s= may give it: labels of letters, digits, '-' and
// '_' (selectors and _domainkey names use '_'), no empty label, no
// trailing dot.  Non-ASCII (RFC 8616 U-labels) is not accepted: converting
// to A-labels is not done here.
bool is_dns_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxDnsName) return false;
  std::size_t label = 0;
  for (const char c : name) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_') return false;
    if (++label > kMaxDnsLabel) return false;
  }
  return label > 0;
}

const Tag* find_tag(const std::vector<Tag>& tags, std::string_view name) {
  for (const Tag& tag : tags) {
    if (tag.name == name) return &tag;
  }
  return nullptr;
}

// The value of a header field: everything after the first colon.
std::string_view field_value(std::string_view raw) {
  const std::size_t colon = raw.find(':');
  return colon == std::string_view::npos ? std::string_view{} : raw.substr(colon + 1);
}

bool is_signature_field(const HeaderField& field) { return iequals(field.name, "dkim-signature"); }

// ---- Lines ----

// One line of `text` from `pos`: its content without the line end (CRLF or
// a bare LF; a CR not followed by LF is data), and where the next begins.
struct Line {
  std::string_view content;
  std::size_t next = 0;
};

Line next_line(std::string_view text, std::size_t pos) {
  const std::size_t lf = text.find('\n', pos);
  if (lf == std::string_view::npos) return Line{text.substr(pos), text.size()};
  std::size_t end = lf;
  if (end > pos && text[end - 1] == '\r') --end;
  return Line{text.substr(pos, end - pos), lf + 1};
}

// ---- OpenSSL ----

struct EvpPkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using UniquePkey = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;

struct EvpMdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using UniqueMdCtx = std::unique_ptr<EVP_MD_CTX, EvpMdCtxFree>;

// A failed OpenSSL call leaves entries in the thread's error queue, which
// the TLS code on the same thread would read as its own (SSL_get_error):
// every verification clears it when it ends.
struct OpensslErrorsCleared {
  OpensslErrorsCleared() = default;
  OpensslErrorsCleared(const OpensslErrorsCleared&) = delete;
  OpensslErrorsCleared& operator=(const OpensslErrorsCleared&) = delete;
  ~OpensslErrorsCleared() { ERR_clear_error(); }
};

// An RSA key as p= carries it: a DER SubjectPublicKeyInfo (what RFC 6376
// section 3.6.1 means and every signer publishes), or a bare PKCS#1
// RSAPublicKey, which some old records hold.  The whole of p= must be used.
Result<UniquePkey> load_rsa_key(const std::vector<std::uint8_t>& der) {
  if (der.size() > static_cast<std::size_t>(std::numeric_limits<long>::max())) {
    return make_error("p= is too long");
  }
  const auto length = static_cast<long>(der.size());
  const unsigned char* p = der.data();
  UniquePkey key(d2i_PUBKEY(nullptr, &p, length));
  if (!key || p != der.data() + der.size()) {
    p = der.data();
    key.reset(d2i_PublicKey(EVP_PKEY_RSA, nullptr, &p, length));
    if (!key || p != der.data() + der.size()) return make_error("p= is not an RSA public key");
  }
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA) return make_error("p= is not an RSA public key");
  const int bits = EVP_PKEY_get_bits(key.get());
  if (bits < kMinRsaKeyBits) {
    return make_error("RSA key of " + std::to_string(bits) + " bits (RFC 8301: at least 1024)");
  }
  if (bits > kMaxRsaKeyBits) return make_error("RSA key of " + std::to_string(bits) + " bits is too large");
  return key;
}

// RFC 8463 section 4: p= is the raw 32-octet Ed25519 public key.
Result<UniquePkey> load_ed25519_key(const std::vector<std::uint8_t>& raw) {
  if (raw.size() != kEd25519KeySize) return make_error("p= is not a 32-byte Ed25519 key");
  UniquePkey key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw.data(), raw.size()));
  if (!key) return make_error("p= is not an Ed25519 public key");
  return key;
}

std::optional<std::array<unsigned char, kSha256Size>> sha256(std::string_view data) {
  std::array<unsigned char, kSha256Size> digest{};
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1 ||
      size != kSha256Size) {
    return std::nullopt;
  }
  return digest;
}

// rsa-sha256: RSASSA-PKCS1-v1_5 with SHA-256 over the header data (RFC 6376
// section 3.3.1).  ed25519-sha256: PureEdDSA over the SHA-256 hash of the
// header data, not over the data itself (RFC 8463 section 3).
bool signature_verifies(EVP_PKEY* key, KeyType type, std::string_view data,
                        const std::vector<std::uint8_t>& signature) {
  UniqueMdCtx ctx(EVP_MD_CTX_new());
  if (!ctx) return false;
  if (type == KeyType::rsa) {
    if (EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1) return false;
    return EVP_DigestVerify(ctx.get(), signature.data(), signature.size(),
                            reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  }
  const auto digest = sha256(data);
  if (!digest) return false;
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key) != 1) return false;
  return EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), digest->data(), digest->size()) == 1;
}

// ---- Body canonicalization, streamed into a sink(std::string_view) ----

// RFC 6376 sections 3.4.3 and 3.4.4.  Empty lines are held back until a
// non-empty line follows, so the ones that end the body are never written.
template <class Sink>
void canonicalize_body_into(std::string_view body, Canonicalization canonicalization, Sink&& sink) {
  std::size_t held_empty_lines = 0;
  bool wrote = false;
  std::string relaxed;
  std::size_t pos = 0;
  while (pos < body.size()) {
    const Line line = next_line(body, pos);
    pos = line.next;
    std::string_view content = line.content;
    if (canonicalization == Canonicalization::relaxed) {
      // Runs of WSP become one SP; WSP at the end of the line goes.
      relaxed.clear();
      bool space = false;
      for (const char c : content) {
        if (is_wsp(c)) {
          space = true;
          continue;
        }
        if (space) relaxed += ' ';
        space = false;
        relaxed += c;
      }
      content = relaxed;
    }
    if (content.empty()) {
      ++held_empty_lines;
      continue;
    }
    for (; held_empty_lines > 0; --held_empty_lines) sink(kCrlf);
    sink(content);
    sink(kCrlf);
    wrote = true;
  }
  // Simple: an empty body is one CRLF.  Relaxed: it stays empty.
  if (!wrote && canonicalization == Canonicalization::simple) sink(kCrlf);
}

struct BodyHash {
  std::array<unsigned char, kSha256Size> digest{};
  std::uint64_t canonical_length = 0;  // of the whole canonical body, saturating
  bool ok = false;
};

// SHA-256 of the first `limit` octets of the canonical body.
BodyHash hash_body(std::string_view body, Canonicalization canonicalization, std::uint64_t limit) {
  BodyHash result;
  UniqueMdCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return result;
  bool failed = false;
  std::uint64_t& total = result.canonical_length;
  canonicalize_body_into(body, canonicalization, [&](std::string_view data) {
    if (total < limit) {
      const std::uint64_t room = limit - total;
      const std::size_t take = room < data.size() ? static_cast<std::size_t>(room) : data.size();
      if (EVP_DigestUpdate(ctx.get(), data.data(), take) != 1) failed = true;
    }
    const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    total = (max - total < data.size()) ? max : total + data.size();
  });
  unsigned int size = 0;
  if (failed || EVP_DigestFinal_ex(ctx.get(), result.digest.data(), &size) != 1 || size != kSha256Size) {
    return result;
  }
  result.ok = true;
  return result;
}

// ---- Verdicts ----

// Fills what a verdict names from the raw tags, as far as they parse, so a
// signature refused for its syntax is still reported with its d= and s=.
DkimVerdict describe(std::string_view header_value) {
  DkimVerdict verdict;
  const auto parsed = parse_tag_list(header_value);
  if (!parsed.ok()) return verdict;
  const std::vector<Tag>& tags = parsed.value();
  if (const Tag* d = find_tag(tags, "d")) verdict.domain = to_lower(d->value);
  if (const Tag* s = find_tag(tags, "s")) verdict.selector = std::string(s->value);
  if (const Tag* a = find_tag(tags, "a")) verdict.algorithm = to_lower(a->value);
  if (const Tag* i = find_tag(tags, "i")) {
    verdict.identity = std::string(i->value);
  } else if (!verdict.domain.empty()) {
    verdict.identity = "@" + verdict.domain;
  }
  if (const Tag* b = find_tag(tags, "b")) verdict.b_prefix = strip_fws(b->value).substr(0, kBPrefixLength);
  return verdict;
}

DkimVerdict refused(DkimVerdict verdict, DkimResult result, std::string reason) {
  verdict.result = result;
  verdict.reason = std::move(reason);
  return verdict;
}

std::int64_t unix_seconds(std::chrono::system_clock::time_point when) {
  return std::chrono::duration_cast<std::chrono::seconds>(when.time_since_epoch()).count();
}

// The checks that need no key: the limit on header fields, the signature's
// syntax (parse_signature) and its expiry.  Either the parsed signature, or
// the final verdict.
struct Checked {
  std::optional<DkimSignature> signature;
  DkimVerdict verdict;
};

Checked check_signature(const MessageParts& parts, std::size_t index,
                        std::chrono::system_clock::time_point now) {
  const std::string_view value = field_value(parts.fields[index].raw);
  Checked checked{std::nullopt, describe(value)};
  if (parts.too_many_fields) {
    checked.verdict =
        refused(std::move(checked.verdict), DkimResult::policy,
                "not checked: more than " + std::to_string(kMaxHeaderFields) + " header fields");
    return checked;
  }
  auto signature = parse_signature(value);
  if (!signature.ok()) {
    checked.verdict = refused(std::move(checked.verdict), DkimResult::permerror, signature.error());
    return checked;
  }
  checked.verdict.domain = signature->domain;
  checked.verdict.selector = signature->selector;
  checked.verdict.algorithm = signature->algorithm;
  checked.verdict.identity = signature->identity;
  checked.verdict.b_prefix = signature->b_text.substr(0, kBPrefixLength);
  // RFC 6376 section 3.5 (x=) and 6.1.1: an expired signature is PERMFAIL.
  const std::int64_t seconds = unix_seconds(now);
  if (signature->expiration && seconds > 0 && *signature->expiration < static_cast<std::uint64_t>(seconds)) {
    checked.verdict = refused(std::move(checked.verdict), DkimResult::permerror, "signature expired");
    return checked;
  }
  checked.signature = std::move(signature.value());
  return checked;
}

// The header data the signature covers (RFC 6376 section 3.7): the selected
// fields, canonicalized, then the signature field itself with b='s value
// emptied and without its final CRLF.
std::string header_data(const MessageParts& parts, std::size_t index, const DkimSignature& signature) {
  std::string data;
  for (const std::size_t selected : select_headers(parts, signature.signed_headers, index)) {
    data += canonicalize_header(parts.fields[selected].raw, signature.header_canonicalization);
  }
  const std::string_view raw = parts.fields[index].raw;
  const std::size_t value_at = raw.size() - field_value(raw).size();
  std::string own(raw.substr(0, value_at + signature.b_region_begin));
  own += raw.substr(value_at + signature.b_region_end);
  std::string canonical = canonicalize_header(own, signature.header_canonicalization);
  canonical.resize(canonical.size() - kCrlf.size());
  data += canonical;
  return data;
}

std::string_view identity_domain(std::string_view identity) {
  const std::size_t at = identity.rfind('@');
  return at == std::string_view::npos ? identity : identity.substr(at + 1);
}

// The checks with the key: RFC 6376 section 6.1.2 (key record) and 6.1.3
// (body hash, then signature).
DkimVerdict verify_against_key(const MessageParts& parts, std::size_t index, const DkimSignature& signature,
                               std::string_view key_record, DkimVerdict verdict) {
  const OpensslErrorsCleared clear_errors;
  const auto key = parse_key_record(key_record);
  if (!key.ok()) return refused(std::move(verdict), DkimResult::permerror, key.error());
  if (key->public_key.empty()) return refused(std::move(verdict), DkimResult::permerror, "key revoked");
  verdict.testing = key->testing;
  const std::string testing = key->testing ? " (key in testing mode)" : "";
  if (key->key_type != signature.key_type) {
    return refused(std::move(verdict), DkimResult::permerror, "key type does not match a=" + testing);
  }
  if (key->strict && !iequals(identity_domain(signature.identity), signature.domain)) {
    return refused(std::move(verdict), DkimResult::permerror, "i= is below d= but the key has t=s" + testing);
  }
  auto pkey =
      signature.key_type == KeyType::rsa ? load_rsa_key(key->public_key) : load_ed25519_key(key->public_key);
  if (!pkey.ok()) return refused(std::move(verdict), DkimResult::permerror, pkey.error() + testing);

  constexpr std::uint64_t kWholeBody = std::numeric_limits<std::uint64_t>::max();
  const BodyHash body =
      hash_body(parts.body, signature.body_canonicalization, signature.body_length.value_or(kWholeBody));
  if (!body.ok) return refused(std::move(verdict), DkimResult::temperror, "SHA-256 unavailable");
  // RFC 6376 section 3.5: l= "MUST NOT be larger than the actual number of
  // octets in the canonicalized message body"; 6.1.1 makes an inconsistent
  // value PERMFAIL.
  if (signature.body_length && *signature.body_length > body.canonical_length) {
    return refused(std::move(verdict), DkimResult::permerror, "l= is longer than the body" + testing);
  }
  if (!std::equal(body.digest.begin(), body.digest.end(), signature.body_hash.begin(),
                  signature.body_hash.end())) {
    return refused(std::move(verdict), DkimResult::fail, "body hash did not verify" + testing);
  }
  const std::string data = header_data(parts, index, signature);
  if (!signature_verifies(pkey->get(), signature.key_type, data, signature.signature)) {
    return refused(std::move(verdict), DkimResult::fail, "signature did not verify" + testing);
  }
  verdict.result = DkimResult::pass;
  verdict.reason = key->testing ? "key in testing mode" : "";
  return verdict;
}

}  // namespace

std::string_view to_string(DkimResult result) {
  switch (result) {
    case DkimResult::none:
      return "none";
    case DkimResult::pass:
      return "pass";
    case DkimResult::fail:
      return "fail";
    case DkimResult::neutral:
      return "neutral";
    case DkimResult::policy:
      return "policy";
    case DkimResult::temperror:
      return "temperror";
    case DkimResult::permerror:
      return "permerror";
  }
  return "permerror";
}

// ---- Tag lists ----

Result<std::vector<Tag>> parse_tag_list(std::string_view text) {
  std::vector<Tag> tags;
  const std::size_t n = text.size();
  std::size_t pos = 0;
  const auto skip_fws = [&] {
    while (pos < n && is_fws(text[pos])) ++pos;
  };
  skip_fws();
  if (pos == n) return tags;
  while (true) {
    skip_fws();
    if (pos == n) break;  // after a final ';'
    if (text[pos] == ';') return make_error("empty tag-spec");
    const std::size_t name_begin = pos;
    if (!is_alpha(text[pos])) return make_error("malformed tag name");
    while (pos < n && (is_alpha(text[pos]) || is_digit(text[pos]) || text[pos] == '_')) ++pos;
    const std::string_view name = text.substr(name_begin, pos - name_begin);
    skip_fws();
    if (pos == n || text[pos] != '=') return make_error("tag " + std::string(name) + " without '='");
    ++pos;
    const std::size_t region_begin = pos;
    const std::size_t semicolon = std::min(text.find(';', pos), n);
    const std::string_view value = trim_fws(text.substr(region_begin, semicolon - region_begin));
    for (const char c : value) {
      const auto byte = static_cast<unsigned char>(c);
      if ((byte < 0x20 && !is_fws(c)) || byte == 0x7f) {
        return make_error("control character in tag " + std::string(name));
      }
    }
    if (find_tag(tags, name) != nullptr) return make_error("duplicate tag " + std::string(name));
    if (tags.size() == kMaxTags) return make_error("more than " + std::to_string(kMaxTags) + " tags");
    tags.push_back(Tag{name, value, region_begin, semicolon});
    pos = semicolon;
    if (pos == n) break;
    ++pos;  // the ';'
  }
  return tags;
}

// ---- Base64 ----

std::optional<std::vector<std::uint8_t>> decode_base64(std::string_view text) {
  const std::string clean = strip_fws(text);
  if (clean.size() % 4 != 0) return std::nullopt;
  const auto value_of = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<std::uint8_t> out;
  out.reserve(clean.size() / 4 * 3);
  for (std::size_t i = 0; i < clean.size(); i += 4) {
    const bool last = i + 4 == clean.size();
    int padding = 0;
    std::uint32_t group = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const char c = clean[i + j];
      int v = 0;
      if (c == '=') {
        // Padding only in the last group's last one or two places.
        if (!last || j < 2) return std::nullopt;
        ++padding;
      } else {
        if (padding > 0) return std::nullopt;
        v = value_of(c);
        if (v < 0) return std::nullopt;
      }
      group = (group << 6) | static_cast<std::uint32_t>(v);
    }
    out.push_back(static_cast<std::uint8_t>(group >> 16));
    if (padding < 2) out.push_back(static_cast<std::uint8_t>((group >> 8) & 0xff));
    if (padding < 1) out.push_back(static_cast<std::uint8_t>(group & 0xff));
  }
  return out;
}

// ---- DKIM-Signature ----

Result<DkimSignature> parse_signature(std::string_view header_value) {
  auto parsed = parse_tag_list(header_value);
  if (!parsed.ok()) return make_error(parsed.error());
  const std::vector<Tag>& tags = *parsed;
  for (const std::string_view required : {"v", "a", "b", "bh", "d", "h", "s"}) {
    if (find_tag(tags, required) == nullptr) return make_error("missing " + std::string(required) + "=");
  }
  DkimSignature sig;
  if (find_tag(tags, "v")->value != "1") return make_error("v= is not 1");

  sig.algorithm = to_lower(find_tag(tags, "a")->value);
  if (sig.algorithm == "rsa-sha256") {
    sig.key_type = KeyType::rsa;
  } else if (sig.algorithm == "ed25519-sha256") {
    sig.key_type = KeyType::ed25519;
  } else if (sig.algorithm == "rsa-sha1") {
    return make_error("rsa-sha1 is not accepted (RFC 8301)");
  } else {
    return make_error("unsupported algorithm " + sig.algorithm);
  }

  if (const Tag* c = find_tag(tags, "c")) {
    const std::vector<std::string_view> parts = split_list(c->value, '/');
    if (parts.size() > 2) return make_error("malformed c=");
    std::array<Canonicalization*, 2> targets = {&sig.header_canonicalization, &sig.body_canonicalization};
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (iequals(parts[i], "simple")) {
        *targets[i] = Canonicalization::simple;
      } else if (iequals(parts[i], "relaxed")) {
        *targets[i] = Canonicalization::relaxed;
      } else {
        return make_error("unsupported canonicalization c=" + std::string(c->value));
      }
    }
  }

  sig.domain = to_lower(find_tag(tags, "d")->value);
  if (!is_dns_name(sig.domain)) return make_error("d= is not a domain name");
  sig.selector = std::string(find_tag(tags, "s")->value);
  if (!is_dns_name(sig.selector)) return make_error("s= is not a selector");
  if (sig.selector.size() + sizeof("._domainkey.") - 1 + sig.domain.size() > kMaxDnsName) {
    return make_error("key name too long");
  }

  if (const Tag* q = find_tag(tags, "q")) {
    const auto methods = split_list(q->value, ':');
    if (std::none_of(methods.begin(), methods.end(),
                     [](std::string_view m) { return iequals(m, "dns/txt"); })) {
      return make_error("q= without dns/txt");
    }
  }

  const std::vector<std::string_view> names = split_list(find_tag(tags, "h")->value, ':');
  if (names.size() > kMaxSignedHeaders) {
    return make_error("h= names more than " + std::to_string(kMaxSignedHeaders) + " fields");
  }
  for (const std::string_view name : names) {
    if (name.empty() || std::any_of(name.begin(), name.end(), is_fws)) return make_error("malformed h=");
    sig.signed_headers.push_back(to_lower(name));
  }
  // RFC 6376 section 6.1.1: "From field not signed" is PERMFAIL.
  if (std::find(sig.signed_headers.begin(), sig.signed_headers.end(), "from") == sig.signed_headers.end()) {
    return make_error("h= does not include From");
  }

  if (const Tag* i = find_tag(tags, "i")) {
    sig.identity = std::string(i->value);
    const std::size_t at = sig.identity.rfind('@');
    if (at == std::string::npos) return make_error("malformed i=");
    // The AUID's domain must be d= or a subdomain of it (section 3.5).
    const std::string domain = to_lower(std::string_view(sig.identity).substr(at + 1));
    const bool same = domain == sig.domain;
    const bool below =
        domain.size() > sig.domain.size() &&
        domain.compare(domain.size() - sig.domain.size(), sig.domain.size(), sig.domain) == 0 &&
        domain[domain.size() - sig.domain.size() - 1] == '.';
    if (!same && !below) return make_error("i= is not within d=");
  } else {
    sig.identity = "@" + sig.domain;
  }

  const Tag* bh = find_tag(tags, "bh");
  auto body_hash = decode_base64(bh->value);
  if (!body_hash || body_hash->size() != kSha256Size) return make_error("malformed bh=");
  sig.body_hash = std::move(*body_hash);

  const Tag* b = find_tag(tags, "b");
  auto signature = decode_base64(b->value);
  if (!signature || signature->empty()) return make_error("malformed b=");
  sig.signature = std::move(*signature);
  sig.b_text = strip_fws(b->value);
  sig.b_region_begin = b->region_begin;
  sig.b_region_end = b->region_end;

  const std::array<std::pair<std::string_view, std::optional<std::uint64_t>*>, 3> numbers = {{
      {"l", &sig.body_length},
      {"t", &sig.timestamp},
      {"x", &sig.expiration},
  }};
  for (const auto& [name, target] : numbers) {
    if (const Tag* tag = find_tag(tags, name)) {
      *target = parse_decimal(tag->value);
      if (!*target) return make_error("malformed " + std::string(name) + "=");
    }
  }
  if (sig.timestamp && sig.expiration && *sig.expiration <= *sig.timestamp) {
    return make_error("x= is not after t=");
  }
  return sig;
}

// ---- Key records ----

Result<DkimKey> parse_key_record(std::string_view record) {
  auto parsed = parse_tag_list(record);
  if (!parsed.ok()) return make_error("key record: " + parsed.error());
  const std::vector<Tag>& tags = *parsed;
  DkimKey key;
  if (const Tag* v = find_tag(tags, "v")) {
    if (v != &tags.front()) return make_error("key record: v= is not the first tag");
    if (v->value != "DKIM1") return make_error("key record: v= is not DKIM1");
  }
  if (const Tag* k = find_tag(tags, "k")) {
    if (iequals(k->value, "rsa")) {
      key.key_type = KeyType::rsa;
    } else if (iequals(k->value, "ed25519")) {
      key.key_type = KeyType::ed25519;
    } else {
      return make_error("key record: unknown key type k=" + std::string(k->value));
    }
  }
  if (const Tag* h = find_tag(tags, "h")) {
    const auto hashes = split_list(h->value, ':');
    if (std::none_of(hashes.begin(), hashes.end(), [](std::string_view x) { return iequals(x, "sha256"); })) {
      return make_error("key record: h= does not allow sha256");
    }
  }
  if (const Tag* s = find_tag(tags, "s")) {
    const auto services = split_list(s->value, ':');
    if (std::none_of(services.begin(), services.end(),
                     [](std::string_view x) { return x == "*" || iequals(x, "email"); })) {
      return make_error("key record: not for email (s=)");
    }
  }
  if (const Tag* t = find_tag(tags, "t")) {
    for (const std::string_view flag : split_list(t->value, ':')) {
      if (iequals(flag, "y")) key.testing = true;
      if (iequals(flag, "s")) key.strict = true;
    }
  }
  const Tag* p = find_tag(tags, "p");
  if (p == nullptr) return make_error("key record: missing p=");
  auto public_key = decode_base64(p->value);
  if (!public_key) return make_error("key record: malformed p=");
  key.public_key = std::move(*public_key);
  return key;
}

// ---- Messages ----

MessageParts split_message(std::string_view message) {
  MessageParts parts;
  std::size_t field_begin = 0;
  std::size_t field_end = 0;
  std::size_t first_line_end = 0;
  bool in_field = false;
  const auto finish_field = [&] {
    if (!in_field) return;
    in_field = false;
    const std::string_view raw = message.substr(field_begin, field_end - field_begin);
    const std::string_view first_line = message.substr(field_begin, first_line_end - field_begin);
    const std::size_t colon = first_line.find(':');
    std::string_view name =
        colon == std::string_view::npos ? std::string_view{} : first_line.substr(0, colon);
    while (!name.empty() && is_wsp(name.back())) name.remove_suffix(1);
    // RFC 5322 section 2.2: a name is printable US-ASCII except ':'.
    const bool is_name = std::all_of(name.begin(), name.end(), [](char c) { return c > ' ' && c < 0x7f; });
    parts.fields.push_back(HeaderField{is_name ? name : std::string_view{}, raw});
  };
  std::size_t pos = 0;
  while (pos < message.size()) {
    const Line line = next_line(message, pos);
    const std::size_t content_end = pos + line.content.size();
    if (line.content.empty()) {
      finish_field();
      parts.body = message.substr(line.next);
      return parts;
    }
    if (in_field && is_wsp(line.content.front())) {
      field_end = content_end;  // a continuation line
    } else {
      finish_field();
      if (parts.fields.size() == kMaxHeaderFields) {
        parts.too_many_fields = true;
        return parts;
      }
      in_field = true;
      field_begin = pos;
      field_end = content_end;
      first_line_end = content_end;
    }
    pos = line.next;
  }
  finish_field();
  return parts;
}

std::vector<std::size_t> select_headers(const MessageParts& parts, const std::vector<std::string>& names,
                                        std::size_t exclude) {
  std::vector<bool> used(parts.fields.size(), false);
  if (exclude < used.size()) used[exclude] = true;
  std::vector<std::size_t> selected;
  for (const std::string& name : names) {
    for (std::size_t i = parts.fields.size(); i-- > 0;) {
      if (!used[i] && iequals(parts.fields[i].name, name)) {
        used[i] = true;
        selected.push_back(i);
        break;
      }
    }
  }
  return selected;
}

std::string canonicalize_header(std::string_view raw_field, Canonicalization canonicalization) {
  std::string out;
  out.reserve(raw_field.size() + kCrlf.size());
  if (canonicalization == Canonicalization::simple) {
    // As is, with bare LF line ends written as CRLF.
    for (std::size_t i = 0; i < raw_field.size(); ++i) {
      if (raw_field[i] == '\n' && (i == 0 || raw_field[i - 1] != '\r')) out += '\r';
      out += raw_field[i];
    }
    out += kCrlf;
    return out;
  }
  const std::size_t colon = raw_field.find(':');
  std::string_view name = raw_field.substr(0, colon);
  while (!name.empty() && is_wsp(name.back())) name.remove_suffix(1);
  out += to_lower(name);
  out += ':';
  if (colon != std::string_view::npos) {
    // Unfold (drop line ends), make each run of WSP one SP, drop WSP at the
    // start and the end of the value.
    const std::string_view value = raw_field.substr(colon + 1);
    bool space = false;
    bool started = false;
    for (std::size_t i = 0; i < value.size(); ++i) {
      const char c = value[i];
      if (c == '\n' || (c == '\r' && i + 1 < value.size() && value[i + 1] == '\n')) continue;
      if (is_wsp(c)) {
        space = true;
        continue;
      }
      if (space && started) out += ' ';
      space = false;
      started = true;
      out += c;
    }
  }
  out += kCrlf;
  return out;
}

std::string canonicalize_body(std::string_view body, Canonicalization canonicalization) {
  std::string out;
  canonicalize_body_into(body, canonicalization, [&](std::string_view data) { out += data; });
  return out;
}

// ---- Verification ----

DkimVerdict verify_with_key(std::string_view message, std::string_view dkim_signature_header_value,
                            std::string_view key_record, std::chrono::system_clock::time_point now) {
  const MessageParts parts = split_message(message);
  const std::string_view wanted = trim_fws(dkim_signature_header_value);
  for (std::size_t i = 0; i < parts.fields.size(); ++i) {
    if (!is_signature_field(parts.fields[i]) || trim_fws(field_value(parts.fields[i].raw)) != wanted)
      continue;
    Checked checked = check_signature(parts, i, now);
    if (!checked.signature) return checked.verdict;
    return verify_against_key(parts, i, *checked.signature, key_record, std::move(checked.verdict));
  }
  if (parts.too_many_fields) {
    return refused(describe(dkim_signature_header_value), DkimResult::policy,
                   "not checked: more than " + std::to_string(kMaxHeaderFields) + " header fields");
  }
  return refused(describe(dkim_signature_header_value), DkimResult::permerror,
                 "DKIM-Signature field not in the message");
}

asio::awaitable<std::vector<DkimVerdict>> verify_dkim(std::string_view message, dns::Resolver& resolver,
                                                      DkimLimits limits) {
  const MessageParts parts = split_message(message);
  std::vector<DkimVerdict> verdicts;
  // Answers already received, so two signatures with one key cost one query.
  // At most max_signatures entries.
  std::vector<std::pair<std::string, dns::Answer<std::string>>> answers;
  std::size_t seen = 0;
  for (std::size_t i = 0; i < parts.fields.size(); ++i) {
    if (!is_signature_field(parts.fields[i])) continue;
    if (++seen > limits.max_signatures) {
      verdicts.push_back(
          refused(describe(field_value(parts.fields[i].raw)), DkimResult::policy,
                  "not checked: more than " + std::to_string(limits.max_signatures) + " signatures"));
      continue;
    }
    Checked checked = check_signature(parts, i, limits.now);
    if (!checked.signature) {
      verdicts.push_back(std::move(checked.verdict));
      continue;
    }
    const DkimSignature& signature = *checked.signature;
    std::string name = signature.selector + "._domainkey." + signature.domain;
    auto cached =
        std::find_if(answers.begin(), answers.end(), [&](const auto& a) { return a.first == name; });
    if (cached == answers.end()) {
      dns::Answer<std::string> answer = co_await resolver.txt(name);
      answers.emplace_back(name, std::move(answer));
      cached = answers.end() - 1;
    }
    const dns::Answer<std::string>& answer = cached->second;
    DkimVerdict verdict = std::move(checked.verdict);
    switch (answer.status) {
      case dns::Status::failure: {
        std::string reason =
            answer.security == dns::Security::bogus ? "key lookup DNSSEC bogus" : "key lookup failed";
        if (!answer.reason.empty()) reason += ": " + answer.reason;
        verdicts.push_back(refused(std::move(verdict), DkimResult::temperror, std::move(reason)));
        continue;
      }
      case dns::Status::nxdomain:
      case dns::Status::nodata:
        verdicts.push_back(refused(std::move(verdict), DkimResult::permerror, "no key at " + name));
        continue;
      case dns::Status::ok:
        break;
    }
    if (answer.records.empty()) {
      verdicts.push_back(refused(std::move(verdict), DkimResult::permerror, "no key at " + name));
    } else if (answer.records.size() > 1) {
      verdicts.push_back(
          refused(std::move(verdict), DkimResult::permerror, "several key records at " + name));
    } else {
      verdicts.push_back(verify_against_key(parts, i, signature, answer.records.front(), std::move(verdict)));
    }
  }
  co_return verdicts;
}

}  // namespace mxgate::sender_auth
