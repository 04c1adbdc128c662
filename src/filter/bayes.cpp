#include "filter/bayes.hpp"

#include <openssl/evp.h>
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "filter/url.hpp"
#include "util/unique_fd.hpp"

namespace mxgate::filter {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_alnum(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// A byte of a word (SpamAssassin's tokenize_line keeps the same set).
bool is_word_byte(unsigned char c) {
  if (is_alnum(c) || c >= 0x80) return true;
  switch (c) {
    case '-':
    case '\'':
    case '.':
    case ',':
    case '@':
    case '*':
    case '!':
    case '_':
    case '$':
    case '%':
      return true;
    default:
      return false;
  }
}

bool is_trimmed(char c) { return c == '-' || c == '\'' || c == '.' || c == ','; }

// The longest prefix of text no longer than max that does not end inside a
// UTF-8 sequence.
std::string_view utf8_prefix(std::string_view text, std::size_t max) {
  if (text.size() <= max) return text;
  std::size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

bool starts_with_ci(std::string_view text, std::string_view lower_prefix) {
  if (text.size() < lower_prefix.size()) return false;
  for (std::size_t i = 0; i < lower_prefix.size(); ++i)
    if (lower(text[i]) != lower_prefix[i]) return false;
  return true;
}

// ------------------------------------------------------------------ SipHash

std::uint64_t load_le64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::uint64_t rotl(std::uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

// SipHash-2-4, the reference algorithm (https://131002.net/siphash/).
std::uint64_t siphash24(std::string_view data, std::uint64_t k0, std::uint64_t k1) {
  std::uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
  std::uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
  std::uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
  std::uint64_t v3 = 0x7465646279746573ULL ^ k1;
  auto round = [&] {
    v0 += v1;
    v1 = rotl(v1, 13);
    v1 ^= v0;
    v0 = rotl(v0, 32);
    v2 += v3;
    v3 = rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = rotl(v1, 17);
    v1 ^= v2;
    v2 = rotl(v2, 32);
  };
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  const std::size_t len = data.size();
  const std::size_t end = len - len % 8;
  for (std::size_t i = 0; i < end; i += 8) {
    const std::uint64_t m = load_le64(in + i);
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  std::uint64_t b = static_cast<std::uint64_t>(len) << 56;
  for (std::size_t i = len % 8; i > 0; --i) b |= static_cast<std::uint64_t>(in[end + i - 1]) << (8 * (i - 1));
  v3 ^= b;
  round();
  round();
  v0 ^= b;
  v2 ^= 0xff;
  round();
  round();
  round();
  round();
  return v0 ^ v1 ^ v2 ^ v3;
}

// ----------------------------------------------------------------- HTML text

bool is_inline_element(std::string_view name) {
  static constexpr std::string_view kInline[] = {"a",      "b",    "i",      "u",     "s",   "em",
                                                 "strong", "font", "span",   "small", "big", "sub",
                                                 "sup",    "tt",   "strike", "abbr"};
  return std::find(std::begin(kInline), std::end(kInline), name) != std::end(kInline);
}

// Appends the UTF-8 encoding of code point cp (nothing for surrogates and
// values past U+10FFFF).
void append_utf8(std::string& out, unsigned long cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    if (cp >= 0xD800 && cp <= 0xDFFF) return;
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp <= 0x10FFFF) {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// An entity at html[i] ('&'): appends its text and returns the index after
// it, or returns i when it is not one we decode.
std::size_t decode_entity(std::string_view html, std::size_t i, std::string& out) {
  const std::size_t semicolon = html.find(';', i + 1);
  if (semicolon == std::string_view::npos || semicolon - i > 10) return i;
  const std::string_view name = html.substr(i + 1, semicolon - i - 1);
  if (name.size() >= 2 && name[0] == '#') {
    unsigned long cp = 0;
    const bool hex = name[1] == 'x' || name[1] == 'X';
    const std::string_view digits = name.substr(hex ? 2 : 1);
    if (digits.empty()) return i;
    for (const char c : digits) {
      int v = -1;
      if (c >= '0' && c <= '9')
        v = c - '0';
      else if (hex && lower(c) >= 'a' && lower(c) <= 'f')
        v = lower(c) - 'a' + 10;
      if (v < 0) return i;
      cp = cp * (hex ? 16 : 10) + static_cast<unsigned long>(v);
      if (cp > 0x10FFFF) return i;
    }
    append_utf8(out, cp == 0xA0 ? ' ' : cp);
    return semicolon + 1;
  }
  static constexpr std::pair<std::string_view, char> kNamed[] = {
      {"nbsp", ' '}, {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
  for (const auto& [entity, c] : kNamed) {
    if (name.size() == entity.size() && starts_with_ci(name, entity)) {
      out += c;
      return semicolon + 1;
    }
  }
  return i;
}

// The visible text of an HTML document (at most max bytes of it), and the
// element names it uses.  Not a renderer: tags become a space (inline ones
// nothing, so "V<b></b>iagra" stays one word), comments and the content of
// <script> and <style> disappear.  One pass, no recursion.
void html_text(std::string_view html, std::size_t max, std::string& text, std::vector<std::string>& tags) {
  std::size_t i = 0;
  const std::size_t n = html.size();
  while (i < n && text.size() < max) {
    const char c = html[i];
    if (c == '&') {
      const std::size_t next = decode_entity(html, i, text);
      if (next != i) {
        i = next;
        continue;
      }
      text += c;
      ++i;
      continue;
    }
    if (c != '<') {
      text += c;
      ++i;
      continue;
    }
    if (html.substr(i, 4) == "<!--") {
      const std::size_t end = html.find("-->", i + 4);
      i = end == std::string_view::npos ? n : end + 3;
      continue;
    }
    std::size_t j = i + 1;
    const bool closing = j < n && html[j] == '/';
    if (closing) ++j;
    std::string name;
    while (j < n && is_alnum(static_cast<unsigned char>(html[j]))) name += lower(html[j++]);
    if (name.empty() && !closing && !(j < n && (html[j] == '!' || html[j] == '?'))) {
      text += c;  // "a < b": not a tag
      ++i;
      continue;
    }
    const std::size_t close = html.find('>', j);
    i = close == std::string_view::npos ? n : close + 1;
    if (!closing && (name == "script" || name == "style")) {
      // Up to the matching end tag (case-insensitive), or the end.
      const std::string end_tag = "</" + name;
      std::size_t k = i;
      for (; k < n; ++k)
        if (html[k] == '<' && starts_with_ci(html.substr(k), end_tag)) break;
      const std::size_t after = k < n ? html.find('>', k) : std::string_view::npos;
      i = after == std::string_view::npos ? n : after + 1;
    }
    if (!name.empty() && name.size() <= 10 && std::find(tags.begin(), tags.end(), name) == tags.end() &&
        tags.size() < 100)
      tags.push_back(name);
    if (!is_inline_element(name)) text += ' ';
  }
  if (text.size() > max) text.resize(max);
}

// ----------------------------------------------------------------- tokenizer

struct Token {
  std::string text;
  std::uint64_t hash;
};

class Tokens {
 public:
  bool full() const { return tokens_.size() >= kBayesMaxTokens; }

  void add(std::string text) {
    if (full()) return;
    const std::uint64_t hash = bayes_token_hash(text);
    if (!seen_.insert(hash).second) return;
    tokens_.push_back(Token{std::move(text), hash});
  }

  // A lower-cased value token, cut to kBayesMaxValueBytes.
  void value(std::string_view prefix, std::string_view value) {
    if (value.empty()) return;
    std::string token(prefix);
    for (const char c : utf8_prefix(value, kBayesMaxValueBytes)) token += lower(c);
    add(std::move(token));
  }

  // The words of text under the word rules, each with prefix.
  void words(std::string_view text, std::string_view prefix) {
    for_each_word(text, [&](std::string_view word) {
      if (word.size() < kBayesMinWordBytes) return;
      std::string token(prefix);
      if (word.size() > kBayesMaxWordBytes) {
        token += "sk:";
        word = utf8_prefix(word, kBayesLongWordPrefix);
      }
      for (const char c : word) token += lower(c);
      add(std::move(token));
    });
  }

  // Runs of word bytes, trimmed, until the list is full.
  template <class Fn>
  void for_each_word(std::string_view text, Fn&& fn) {
    std::size_t i = 0;
    const std::size_t n = text.size();
    while (i < n && !full()) {
      while (i < n && !is_word_byte(static_cast<unsigned char>(text[i]))) ++i;
      std::size_t end = i;
      while (end < n && is_word_byte(static_cast<unsigned char>(text[end]))) ++end;
      std::string_view word = text.substr(i, end - i);
      i = end;
      while (!word.empty() && is_trimmed(word.front())) word.remove_prefix(1);
      while (!word.empty() && is_trimmed(word.back())) word.remove_suffix(1);
      if (!word.empty()) fn(word);
    }
  }

  void urls(std::string_view text) {
    for (const std::string& url : find_urls(text, kBayesMaxUrls).urls) {
      if (full()) return;
      const auto parsed = parse_url(url);
      if (!parsed || parsed->host.empty()) continue;
      if (parsed->ip_literal) {
        add("url:ip");
        value("url:", parsed->host);
        continue;
      }
      std::string_view host = parsed->host;
      value("url:", host);
      // Parent domains down to two labels.
      for (std::size_t dot = host.find('.'); dot != std::string_view::npos; dot = host.find('.')) {
        host.remove_prefix(dot + 1);
        if (host.find('.') == std::string_view::npos) break;
        value("url:", host);
      }
    }
  }

  std::vector<Token>& list() { return tokens_; }

 private:
  std::unordered_set<std::uint64_t> seen_;
  std::vector<Token> tokens_;
};

std::string_view part_count_bucket(std::size_t n) {
  if (n == 0) return "0";
  if (n == 1) return "1";
  if (n == 2) return "2";
  if (n == 3) return "3";
  if (n <= 5) return "4-5";
  if (n <= 10) return "6-10";
  return "11+";
}

// A dotted-quad IPv4 address.
bool is_ipv4(std::string_view s) {
  int parts = 0;
  std::size_t digits = 0;
  for (const char c : s) {
    if (c >= '0' && c <= '9') {
      if (++digits > 3) return false;
    } else if (c == '.' && digits > 0) {
      ++parts;
      digits = 0;
    } else {
      return false;
    }
  }
  return parts == 3 && digits > 0;
}

// A host name with at least two labels.
bool is_host_name(std::string_view s) {
  const auto dot = s.rfind('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == s.size()) return false;
  for (const char c : s)
    if (!is_alnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') return false;
  // The top-level label is letters ("v1.1b", a software version, is not a
  // host).
  return s.size() - dot > 2 && std::all_of(s.begin() + static_cast<std::ptrdiff_t>(dot) + 1, s.end(),
                                           [](char c) { return lower(c) >= 'a' && lower(c) <= 'z'; });
}

// The relays a Received field names (RFC 5321 section 4.4: "from" name,
// reverse-DNS name and address, "by" name): each address with its /24 and
// /16, each host name with its parent domains down to two labels.  Dates,
// queue ids and software versions differ per message and are left out, so
// a sender's mail servers become clues that recur across its messages.
void received_tokens(std::string_view value, Tokens& t) {
  std::size_t i = 0;
  bool after_for = false;
  while (i < value.size() && !t.full()) {
    const std::size_t start = value.find_first_not_of(" \t()[]<>;=\"", i);
    if (start == std::string_view::npos) break;
    std::size_t end = value.find_first_of(" \t()[]<>;=\"", start);
    if (end == std::string_view::npos) end = value.size();
    std::string_view word = value.substr(start, end - start);
    i = end;
    const bool mailbox = std::exchange(after_for, word.size() == 3 && starts_with_ci(word, "for"));
    while (!word.empty() && word.back() == '.') word.remove_suffix(1);
    if (word.size() > kBayesMaxValueBytes) continue;
    if (is_ipv4(word)) {
      if (word.starts_with("127.")) continue;
      t.value("r:ip:", word);
      for (int cut = 0; cut < 2; ++cut) {
        word = word.substr(0, word.rfind('.'));
        t.value("r:ip:", word);
      }
    } else if (word.find('@') != std::string_view::npos) {
      // "for <mailbox>": the recipient this hop delivered to (other
      // addresses here are queue ids).
      if (mailbox) t.value("r:for:", word);
    } else if (is_host_name(word)) {
      t.value("r:", word);
      for (std::size_t dot = word.find('.'); dot != std::string_view::npos; dot = word.find('.')) {
        word.remove_prefix(dot + 1);
        if (word.find('.') == std::string_view::npos) break;
        t.value("r:", word);
      }
    }
  }
}

// Each mailbox of an address list (To, Cc), and its domain: who a message
// was written to recurs across a correspondent's or a list's messages (a
// subscription address such as "jm-newsletter@" marks mail that was asked
// for).  Display names are left to the From tokens.
void address_tokens(std::string_view name, std::string_view value, Tokens& t) {
  const std::string prefix = "h:" + std::string(name) + ":";
  t.for_each_word(value, [&](std::string_view word) {
    const auto at = word.find('@');
    if (at == std::string_view::npos) return;
    t.value(prefix, word);
    t.value(prefix + "@", word.substr(at + 1));
  });
}

// The header fields whose values are tokenized: SpamBayes' default
// choice (Message-ID, X-Mailer, Content-Type with its charset,
// Content-Transfer-Encoding), User-Agent (X-Mailer's modern form), the
// relays of Received and the mailboxes of To and Cc.  Others give their
// name (and count) only: the words of list-manager headers and the like
// repeat across every message of one source and outvote the text (measured:
// tokenizing every field's words lowered the cross-validated ROC AUC from
// 0.9983 to 0.9950, bench/README.md).
void field_tokens(std::string_view name, std::string_view value, Tokens& t) {
  if (name == "received") {
    received_tokens(utf8_prefix(value, kBayesMaxFieldBytes), t);
    return;
  }
  static constexpr std::string_view kFields[] = {"message-id", "x-mailer", "user-agent", "content-type",
                                                 "content-transfer-encoding"};
  if (name == "to" || name == "cc") {
    address_tokens(name, utf8_prefix(value, kBayesMaxFieldBytes), t);
    return;
  }
  if (std::find(std::begin(kFields), std::end(kFields), name) == std::end(kFields)) return;
  value = utf8_prefix(value, kBayesMaxFieldBytes);
  const std::string prefix = "h:" + std::string(name) + ":";
  if (name == "message-id") {
    // The domain only: the left-hand side is unique per message.
    const auto at = value.rfind('@');
    if (at == std::string_view::npos) {
      t.add(prefix + "none");
      return;
    }
    std::string_view domain = value.substr(at + 1);
    domain = domain.substr(0, domain.find_first_of("> \t"));
    t.value(prefix, domain);
    return;
  }
  t.words(value, prefix);
}

// Every top-level header field of the raw message, unfolded, as in
// field_tokens().
void header_tokens(std::string_view content, Tokens& t) {
  const std::string_view block = utf8_prefix(content, kBayesMaxHeaderBytes);
  std::string name;
  std::string value;
  std::size_t fields = 0;
  auto flush = [&] {
    if (!name.empty()) field_tokens(name, value, t);
    name.clear();
    value.clear();
  };
  std::size_t pos = 0;
  while (pos < block.size() && !t.full()) {
    const std::size_t end = block.find('\n', pos);
    std::string_view line = block.substr(pos, (end == std::string_view::npos ? block.size() : end) - pos);
    pos = end == std::string_view::npos ? block.size() : end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;  // the end of the header
    if (line.front() == ' ' || line.front() == '\t') {
      if (!name.empty() && value.size() < kBayesMaxFieldBytes) {
        value += ' ';
        value += line;
      }
      continue;
    }
    flush();
    if (++fields > kBayesMaxHeaderFields) break;
    const auto colon = line.find(':');
    // Not a field (an mbox "From " line has a colon only in its time).
    if (colon == std::string_view::npos || colon == 0 ||
        line.substr(0, colon).find_first_of(" \t") != std::string_view::npos)
      continue;
    for (const char c : line.substr(0, colon)) name += lower(c);
    value = line.substr(colon + 1);
  }
  flush();
}

std::vector<Token> tokenize(std::string_view content, const ParsedMessage& m) {
  Tokens t;
  t.words(utf8_prefix(m.subject, kBayesMaxSubjectBytes), "s:");
  if (m.from) {
    t.value("from:", m.from->address);
    t.value("fromdom:", m.from->domain);
    t.words(utf8_prefix(m.from->display_name, kBayesMaxSubjectBytes), "fromname:");
  }
  for (std::size_t i = 0; i < m.reply_to.size() && i < kBayesMaxReplyTo; ++i) {
    const Mailbox& r = m.reply_to[i];
    t.value("rtdom:", r.domain);
    if (m.from) t.add(r.domain == m.from->domain ? "rt:samedomain" : "rt:otherdomain");
  }
  // Each field name, and how often it occurs when more than once
  // ("h:received*4"; 10 and more are "*10+").
  std::vector<std::pair<std::string, unsigned>> names;
  for (std::size_t i = 0; i < m.headers.size() && i < kBayesMaxHeaderNames; ++i) {
    std::string name = "h:";
    for (const char c : utf8_prefix(m.headers[i].name, kBayesMaxValueBytes)) name += lower(c);
    auto it = std::find_if(names.begin(), names.end(), [&](const auto& n) { return n.first == name; });
    if (it == names.end()) {
      names.emplace_back(std::move(name), 1);
    } else {
      ++it->second;
    }
  }
  for (const auto& [name, count] : names) {
    t.add(name);
    if (count > 1) t.add(name + "*" + (count >= 10 ? std::string("10+") : std::to_string(count)));
  }
  header_tokens(content, t);
  for (std::size_t i = 0; i < m.parts.size() && i < kBayesMaxParts; ++i) {
    const Part& part = m.parts[i];
    t.value("ct:", part.content_type);
    if (!part.attachment) continue;
    const auto dot = part.filename.rfind('.');
    if (dot != std::string::npos && part.filename.size() - dot - 1 <= 10 && dot + 1 < part.filename.size())
      t.value("att:", std::string_view(part.filename).substr(dot + 1));
  }
  t.add("parts:" + std::string(part_count_bucket(m.parts.size())));
  const std::string_view text = utf8_prefix(m.text, kBayesMaxBodyBytes);
  const std::string_view html = utf8_prefix(m.html, kBayesMaxBodyBytes);
  t.urls(text);
  t.urls(html);
  std::string html_visible;
  std::vector<std::string> tags;
  if (!html.empty()) html_text(html, kBayesMaxBodyBytes, html_visible, tags);
  for (const std::string& tag : tags) t.add("html:" + tag);
  t.words(text, "");
  t.words(html_visible, "");
  return std::move(t.list());
}

// ------------------------------------------------------------------- SQLite

struct SqliteClose {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using SqliteDb = std::unique_ptr<sqlite3, SqliteClose>;

struct SqliteFinalize {
  void operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }
};

// A prepared statement; reset() makes it ready for the next bindings.
class Statement {
 public:
  Statement() = default;
  explicit Statement(sqlite3_stmt* statement) : statement_(statement) {}

  explicit operator bool() const { return statement_ != nullptr; }
  void bind(int index, std::int64_t value) { sqlite3_bind_int64(statement_.get(), index, value); }
  void bind_text(int index, std::string_view text) {
    sqlite3_bind_text(statement_.get(), index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void bind_blob(int index, const void* data, std::size_t size) {
    sqlite3_bind_blob(statement_.get(), index, data, static_cast<int>(size), SQLITE_TRANSIENT);
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(statement_.get()); }
  std::int64_t column(int index) { return sqlite3_column_int64(statement_.get(), index); }
  std::string text(int index) {
    const auto* p = sqlite3_column_text(statement_.get(), index);
    return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p));
  }
  void reset() {
    sqlite3_reset(statement_.get());
    sqlite3_clear_bindings(statement_.get());
  }

 private:
  std::unique_ptr<sqlite3_stmt, SqliteFinalize> statement_;
};

// One slot of the snapshot's open-addressing table (linear probing; key 0
// is empty).  Token hashes are SipHash values, uniform already.
struct Slot {
  std::uint64_t key = 0;
  std::uint32_t spam = 0;
  std::uint32_t ham = 0;
};

std::uint32_t clamp32(std::int64_t v) {
  if (v < 0) return 0;
  return v > 0xFFFFFFFFll ? 0xFFFFFFFFu : static_cast<std::uint32_t>(v);
}

}  // namespace

struct BayesStore::Impl {
  std::filesystem::path path;
  bool writable = false;
  SqliteDb db;
  std::uint64_t spam = 0;
  std::uint64_t ham = 0;
  std::uint64_t tokens = 0;
  std::int64_t data_version = 0;
  // Read-only stores: every token, loaded at open.
  std::vector<Slot> slots;
  std::uint64_t mask = 0;
  // Writable stores: lookups through SQLite, one at a time.
  mutable std::mutex mutex;
  mutable Statement lookup;
  mutable Statement version;

  Error error(std::string_view what) const {
    std::string message = "bayes database " + path.string() + ": " + std::string(what);
    if (db) message += std::string(": ") + sqlite3_errmsg(db.get());
    return make_error(std::move(message));
  }

  Result<Statement> prepare(std::string_view sql) const {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db.get(), sql.data(), static_cast<int>(sql.size()), &raw, nullptr) != SQLITE_OK)
      return error("prepare \"" + std::string(sql.substr(0, 40)) + "\"");
    return Statement(raw);
  }

  Result<void> exec(const char* sql) const {
    if (sqlite3_exec(db.get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK)
      return error(std::string(sql).substr(0, 40));
    return {};
  }

  // The first column of a one-row query.
  Result<std::int64_t> integer(std::string_view sql) const {
    auto statement = prepare(sql);
    if (!statement) return make_error(statement.error());
    const int rc = statement->step();
    if (rc == SQLITE_ROW) return statement->column(0);
    if (rc == SQLITE_DONE) return std::int64_t{0};
    return error(sql);
  }

  void insert_slot(std::uint64_t key, std::uint32_t s, std::uint32_t h) {
    std::uint64_t i = key & mask;
    while (slots[i].key != 0 && slots[i].key != key) i = (i + 1) & mask;
    slots[i] = Slot{key, s, h};
  }
};

// Rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(const BayesStore::Impl& store) : store_(store) {}
  ~Transaction() {
    if (open_) sqlite3_exec(store_.db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  Result<void> begin(const char* sql) {
    auto r = store_.exec(sql);
    open_ = r.ok();
    return r;
  }
  Result<void> commit() {
    auto r = store_.exec("COMMIT");
    if (r) open_ = false;
    return r;
  }

 private:
  const BayesStore::Impl& store_;
  bool open_ = false;
};

namespace {

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  spam INTEGER NOT NULL, ham INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tokens (token INTEGER PRIMARY KEY,"
    "  spam INTEGER NOT NULL, ham INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS learned (key BLOB PRIMARY KEY, spam INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO messages (id, spam, ham) VALUES (1, 0, 0);";

Result<void> create_schema(BayesStore::Impl& s) {
  Transaction transaction(s);
  if (auto r = transaction.begin("BEGIN IMMEDIATE"); !r) return r;
  // Another learner may have created it while we waited for the lock.
  auto version = s.integer("PRAGMA user_version");
  if (!version) return make_error(version.error());
  if (*version == 0) {
    if (auto r = s.exec(kSchema); !r) return r;
    auto insert = s.prepare("INSERT OR REPLACE INTO meta (name, value) VALUES ('tokenizer', ?1)");
    if (!insert) return make_error(insert.error());
    insert->bind_text(1, kBayesTokenizer);
    if (insert->step() != SQLITE_DONE) return s.error("write meta");
    const std::string pragmas = "PRAGMA application_id = " + std::to_string(kBayesApplicationId) +
                                "; PRAGMA user_version = " + std::to_string(kBayesSchemaVersion) + ";";
    if (auto r = s.exec(pragmas.c_str()); !r) return r;
  }
  return transaction.commit();
}

// The store's identity: application_id, schema version, tokenizer.
Result<void> check_schema(BayesStore::Impl& s) {
  auto application = s.integer("PRAGMA application_id");
  if (!application) return make_error(application.error());
  auto version = s.integer("PRAGMA user_version");
  if (!version) return make_error(version.error());
  if (*application == 0 && *version == 0) {
    auto tables = s.integer("SELECT count(*) FROM sqlite_master");
    if (!tables) return make_error(tables.error());
    if (*tables != 0) return make_error("bayes database " + s.path.string() + ": not an mxgate Bayes store");
    if (!s.writable)
      return make_error("bayes database " + s.path.string() + ": empty (learn with mxgate learn)");
    if (auto r = create_schema(s); !r) return r;
    return check_schema(s);
  }
  if (*application != kBayesApplicationId) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08llx", static_cast<unsigned long long>(*application & 0xFFFFFFFF));
    return make_error("bayes database " + s.path.string() + ": not an mxgate Bayes store (application_id 0x" +
                      hex + ")");
  }
  if (*version != kBayesSchemaVersion)
    return make_error("bayes database " + s.path.string() + ": schema version " + std::to_string(*version) +
                      ", this mxgate reads version " + std::to_string(kBayesSchemaVersion));
  auto select = s.prepare("SELECT value FROM meta WHERE name = 'tokenizer'");
  if (!select) return make_error(select.error());
  const int rc = select->step();
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return s.error("read meta");
  const std::string tokenizer = rc == SQLITE_ROW ? select->text(0) : std::string();
  if (tokenizer != kBayesTokenizer)
    return make_error("bayes database " + s.path.string() + ": learned with tokenizer \"" + tokenizer +
                      "\", this mxgate tokenizes as \"" + std::string(kBayesTokenizer) +
                      "\" (move it away and learn again)");
  return {};
}

Result<void> read_totals(BayesStore::Impl& s) {
  auto select = s.prepare("SELECT spam, ham FROM messages WHERE id = 1");
  if (!select) return make_error(select.error());
  if (select->step() != SQLITE_ROW) return s.error("read message counts");
  s.spam = static_cast<std::uint64_t>(std::max<std::int64_t>(select->column(0), 0));
  s.ham = static_cast<std::uint64_t>(std::max<std::int64_t>(select->column(1), 0));
  return {};
}

// Every token into the in-memory table, in one read transaction so the
// counts and totals agree.
Result<void> load_snapshot(BayesStore::Impl& s) {
  Transaction transaction(s);
  if (auto r = transaction.begin("BEGIN"); !r) return r;
  if (auto r = read_totals(s); !r) return r;
  auto count = s.integer("SELECT count(*) FROM tokens");
  if (!count) return make_error(count.error());
  std::uint64_t capacity = 16;
  while (capacity < static_cast<std::uint64_t>(*count) * 2) capacity <<= 1;
  s.slots.assign(capacity, Slot{});
  s.mask = capacity - 1;
  auto select = s.prepare("SELECT token, spam, ham FROM tokens");
  if (!select) return make_error(select.error());
  std::uint64_t loaded = 0;
  int rc;
  while ((rc = select->step()) == SQLITE_ROW) {
    const auto key = static_cast<std::uint64_t>(select->column(0));
    if (key == 0 || loaded >= static_cast<std::uint64_t>(*count)) continue;  // never written; guard the table
    s.insert_slot(key, clamp32(select->column(1)), clamp32(select->column(2)));
    ++loaded;
  }
  if (rc != SQLITE_DONE) return s.error("read tokens");
  s.tokens = loaded;
  return transaction.commit();
}

Result<std::int64_t> data_version(const BayesStore::Impl& s) {
  if (!s.version) {
    auto statement = s.prepare("PRAGMA data_version");
    if (!statement) return make_error(statement.error());
    s.version = std::move(statement.value());
  }
  s.version.reset();
  if (s.version.step() != SQLITE_ROW) return s.error("PRAGMA data_version");
  const std::int64_t v = s.version.column(0);
  s.version.reset();
  return v;
}

}  // namespace

// ---------------------------------------------------------------- public API

std::vector<std::string> bayes_tokens(std::string_view content, const ParsedMessage& message) {
  std::vector<std::string> out;
  for (Token& token : tokenize(content, message)) out.push_back(std::move(token.text));
  return out;
}

std::uint64_t bayes_token_hash(std::string_view token) {
  constexpr std::uint64_t k0 = 0x0706050403020100ULL;  // key bytes 00 .. 07, little-endian
  constexpr std::uint64_t k1 = 0x0f0e0d0c0b0a0908ULL;  // key bytes 08 .. 0f
  const std::uint64_t h = siphash24(token, k0, k1);
  return h == 0 ? 1 : h;
}

std::array<unsigned char, 32> bayes_message_key(std::string_view content) {
  std::string message_id;
  bool found_id = false;
  std::size_t body = std::string_view::npos;
  std::size_t pos = 0;
  bool in_id = false;
  while (pos < content.size()) {
    std::size_t end = content.find('\n', pos);
    const std::size_t next = end == std::string_view::npos ? content.size() : end + 1;
    std::string_view line = content.substr(pos, (end == std::string_view::npos ? content.size() : end) - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = next;
    if (line.empty()) {
      body = next;
      break;
    }
    if (in_id && (line.front() == ' ' || line.front() == '\t')) {
      message_id += line;
      continue;
    }
    in_id = false;
    if (!found_id && starts_with_ci(line, "message-id:")) {
      found_id = in_id = true;
      message_id = line.substr(11);
    }
  }
  auto is_space = [](char c) { return c == ' ' || c == '\t'; };
  while (!message_id.empty() && is_space(message_id.back())) message_id.pop_back();
  const auto first = std::find_if_not(message_id.begin(), message_id.end(), is_space);
  message_id.erase(message_id.begin(), first);

  const std::string_view bytes = body == std::string_view::npos ? content : content.substr(body);
  std::string normalised;
  normalised.reserve(bytes.size());
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] == '\r' && i + 1 < bytes.size() && bytes[i + 1] == '\n') continue;
    normalised += bytes[i];
  }
  std::array<unsigned char, 32> key{};
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  static constexpr char kDomain[] = "mxgate-bayes-key-1";
  unsigned int size = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), kDomain, sizeof kDomain) != 1 ||  // with its NUL
      EVP_DigestUpdate(ctx.get(), message_id.data(), message_id.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), "", 1) != 1 ||
      EVP_DigestUpdate(ctx.get(), normalised.data(), normalised.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), key.data(), &size) != 1) {
    // SHA-256 is always available in OpenSSL's default provider: only
    // allocation can fail here.
    std::fprintf(stderr, "bayes: SHA-256 failed\n");
    std::abort();
  }
  return key;
}

BayesStore::BayesStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BayesStore::~BayesStore() = default;

const std::filesystem::path& BayesStore::path() const { return impl_->path; }
bool BayesStore::writable() const { return impl_->writable; }
std::uint64_t BayesStore::spam_messages() const { return impl_->spam; }
std::uint64_t BayesStore::ham_messages() const { return impl_->ham; }
std::uint64_t BayesStore::token_count() const { return impl_->tokens; }

BayesCounts BayesStore::counts(std::uint64_t token_hash) const {
  const Impl& s = *impl_;
  if (!s.writable) {
    if (s.slots.empty() || token_hash == 0) return {};
    std::uint64_t i = token_hash & s.mask;
    while (true) {
      const Slot& slot = s.slots[i];
      if (slot.key == token_hash) return BayesCounts{slot.spam, slot.ham};
      if (slot.key == 0) return {};
      i = (i + 1) & s.mask;
    }
  }
  std::lock_guard lock(s.mutex);
  if (!s.lookup) {
    auto statement = s.prepare("SELECT spam, ham FROM tokens WHERE token = ?1");
    if (!statement) return {};
    s.lookup = std::move(statement.value());
  }
  s.lookup.bind(1, static_cast<std::int64_t>(token_hash));
  BayesCounts counts;
  if (s.lookup.step() == SQLITE_ROW)
    counts = BayesCounts{clamp32(s.lookup.column(0)), clamp32(s.lookup.column(1))};
  s.lookup.reset();
  return counts;
}

bool BayesStore::changed() const {
  std::lock_guard lock(impl_->mutex);
  auto now = data_version(*impl_);
  return !now || *now != impl_->data_version;
}

Result<std::unique_ptr<BayesStore>> open_bayes(const std::filesystem::path& path, bool writable) {
  auto impl = std::make_unique<BayesStore::Impl>();
  impl->path = path;
  impl->writable = writable;
  std::error_code ec;
  const bool exists = std::filesystem::exists(path, ec);
  if (!writable && !exists)
    return make_error("bayes database " + path.string() + ": does not exist (learn with mxgate learn)");
  if (exists && !std::filesystem::is_regular_file(path, ec))
    return make_error("bayes database " + path.string() + ": not a regular file");
  const int flags = (writable ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY) |
                    SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW;
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  impl->db.reset(raw);
  if (rc != SQLITE_OK) return impl->error("open");
  sqlite3_extended_result_codes(raw, 1);
  // A learner holds the write lock for its whole run; readers in WAL mode
  // never wait, a second learner waits this long.
  sqlite3_busy_timeout(raw, 10000);
  if (writable) {
    // Before the schema: the journal mode is kept in the file.
    if (auto r = impl->exec("PRAGMA journal_mode = WAL"); !r) return make_error(r.error());
    if (auto r = impl->exec("PRAGMA synchronous = NORMAL"); !r) return make_error(r.error());
  }
  if (auto r = check_schema(*impl); !r) return make_error(r.error());
  if (writable) {
    if (auto r = read_totals(*impl); !r) return make_error(r.error());
    auto count = impl->integer("SELECT count(*) FROM tokens");
    if (!count) return make_error(count.error());
    impl->tokens = static_cast<std::uint64_t>(*count);
  } else {
    if (auto r = load_snapshot(*impl); !r) return make_error(r.error());
  }
  auto version = data_version(*impl);
  if (!version) return make_error(version.error());
  impl->data_version = *version;
  return std::make_unique<BayesStore>(std::move(impl));
}

namespace {

struct Delta {
  std::int64_t spam = 0;
  std::int64_t ham = 0;
};

// Learns each message get(i) returns (nullptr: stop with error) in one transaction.
template <class Get>
Result<BayesLearnSummary> learn(BayesStore& store, bool spam, std::size_t count, Get&& get,
                                const MimeLimits& limits) {
  BayesStore::Impl& s = store.impl();
  if (!s.writable)
    return make_error("bayes database " + s.path.string() + ": opened read-only, cannot learn");
  std::lock_guard lock(s.mutex);
  Transaction transaction(s);
  if (auto r = transaction.begin("BEGIN IMMEDIATE"); !r) return make_error(r.error());
  auto find = s.prepare("SELECT spam FROM learned WHERE key = ?1");
  auto remember = s.prepare(
      "INSERT INTO learned (key, spam) VALUES (?1, ?2) "
      "ON CONFLICT (key) DO UPDATE SET spam = excluded.spam");
  auto update = s.prepare(
      "INSERT INTO tokens (token, spam, ham) VALUES (?1, max(?2, 0), max(?3, 0)) "
      "ON CONFLICT (token) DO UPDATE SET spam = max(spam + ?2, 0), ham = max(ham + ?3, 0)");
  auto totals =
      s.prepare("UPDATE messages SET spam = max(spam + ?1, 0), ham = max(ham + ?2, 0) WHERE id = 1");
  for (auto* r : {&find, &remember, &update, &totals})
    if (!*r) return make_error(r->error());

  BayesLearnSummary summary;
  std::unordered_map<std::uint64_t, Delta> deltas;
  Delta messages;
  bool moved_any = false;
  std::string buffer;
  for (std::size_t i = 0; i < count; ++i) {
    auto content = get(i, buffer);
    if (!content) return make_error(content.error());
    const auto key = bayes_message_key(*content);
    find->bind_blob(1, key.data(), key.size());
    const int rc = find->step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return s.error("read learned");
    const bool known = rc == SQLITE_ROW;
    const bool was_spam = known && find->column(0) != 0;
    find->reset();
    if (known && was_spam == spam) {
      ++summary.skipped;
      continue;
    }
    const ParsedMessage parsed = parse_mime(*content, limits);
    const std::int64_t add = 1;
    const std::int64_t take = known ? -1 : 0;  // moved from the other class
    moved_any = moved_any || known;
    for (const Token& token : tokenize(*content, parsed)) {
      Delta& d = deltas[token.hash];
      d.spam += spam ? add : take;
      d.ham += spam ? take : add;
    }
    messages.spam += spam ? add : take;
    messages.ham += spam ? take : add;
    remember->bind_blob(1, key.data(), key.size());
    remember->bind(2, spam ? 1 : 0);
    if (remember->step() != SQLITE_DONE) return s.error("write learned");
    remember->reset();
    ++summary.learned;
  }

  // Token order is B-tree order: each page is written once.
  std::vector<std::pair<std::int64_t, Delta>> ordered;
  ordered.reserve(deltas.size());
  for (const auto& [hash, d] : deltas)
    if (d.spam != 0 || d.ham != 0) ordered.emplace_back(static_cast<std::int64_t>(hash), d);
  std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [token, d] : ordered) {
    update->bind(1, token);
    update->bind(2, d.spam);
    update->bind(3, d.ham);
    if (update->step() != SQLITE_DONE) return s.error("write tokens");
    update->reset();
  }
  if (moved_any) {
    if (auto r = s.exec("DELETE FROM tokens WHERE spam = 0 AND ham = 0"); !r) return make_error(r.error());
  }
  totals->bind(1, messages.spam);
  totals->bind(2, messages.ham);
  if (totals->step() != SQLITE_DONE) return s.error("write message counts");
  totals->reset();
  if (auto r = read_totals(s); !r) return make_error(r.error());
  auto tokens = s.integer("SELECT count(*) FROM tokens");
  if (!tokens) return make_error(tokens.error());
  if (auto r = transaction.commit(); !r) return make_error(r.error());
  s.tokens = static_cast<std::uint64_t>(*tokens);
  summary.spam_total = s.spam;
  summary.ham_total = s.ham;
  return summary;
}

}  // namespace

Result<BayesLearnSummary> learn_messages(BayesStore& store, bool spam,
                                         const std::vector<std::filesystem::path>& files,
                                         const MimeLimits& limits) {
  return learn(
      store, spam, files.size(),
      [&](std::size_t i, std::string& buffer) -> Result<std::string_view> {
        buffer.clear();
        if (const int err = read_file(files[i], buffer); err != 0)
          return make_error("cannot read " + files[i].string() + ": " + errno_text(err));
        return std::string_view(buffer);
      },
      limits);
}

Result<BayesLearnSummary> learn_contents(BayesStore& store, bool spam,
                                         const std::vector<std::string_view>& contents,
                                         const MimeLimits& limits) {
  return learn(
      store, spam, contents.size(),
      [&](std::size_t i, std::string&) -> Result<std::string_view> { return contents[i]; }, limits);
}

// --------------------------------------------------------------- classifier

namespace {

// P(X >= x2) for X chi-square distributed with an even number of degrees of
// freedom: e^-m Σ_{i < v/2} m^i / i!, m = x2 / 2, summed in log space so
// that no term underflows before it is added.
double chi2_survival(double x2, std::size_t v) {
  const double m = x2 / 2.0;
  if (m <= 0) return 1.0;
  double log_term = -m;
  double sum = std::exp(log_term);
  const double log_m = std::log(m);
  for (std::size_t i = 1; i < v / 2; ++i) {
    log_term += log_m - std::log(static_cast<double>(i));
    sum += std::exp(log_term);
  }
  return std::min(sum, 1.0);
}

}  // namespace

BayesResult bayes_classify(std::string_view content, const ParsedMessage& message, const BayesStore& store) {
  const std::vector<Token> tokens = tokenize(content, message);
  BayesResult result;
  result.tokens = tokens.size();
  const double total_spam = static_cast<double>(store.spam_messages());
  const double total_ham = static_cast<double>(store.ham_messages());
  if (total_spam == 0 && total_ham == 0) return result;
  struct Clue {
    double f;
    double strength;
    std::uint64_t hash;
    std::size_t index;
  };
  std::vector<Clue> clues;
  clues.reserve(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const BayesCounts c = store.counts(tokens[i].hash);
    const double s = std::min<double>(c.spam, total_spam);
    const double h = std::min<double>(c.ham, total_ham);
    const double n = s + h;
    if (n == 0) continue;
    const double spam_ratio = total_spam > 0 ? s / total_spam : 0;
    const double ham_ratio = total_ham > 0 ? h / total_ham : 0;
    const double p = spam_ratio / (spam_ratio + ham_ratio);
    const double f = (kBayesUnknownStrength * kBayesUnknownProbability + n * p) / (kBayesUnknownStrength + n);
    const double strength = std::fabs(f - 0.5);
    if (strength < kBayesMinStrength) continue;
    clues.push_back(Clue{f, strength, tokens[i].hash, i});
  }
  // Strongest first; equal strengths in a fixed order (by hash), so the
  // result does not depend on the message's token order.
  auto stronger = [](const Clue& a, const Clue& b) {
    return a.strength != b.strength ? a.strength > b.strength : a.hash < b.hash;
  };
  const std::size_t used = std::min(clues.size(), kBayesMaxClues);
  std::partial_sort(clues.begin(), clues.begin() + static_cast<std::ptrdiff_t>(used), clues.end(), stronger);
  clues.resize(used);
  if (clues.empty()) return result;
  double ln_ham = 0;   // Σ ln f: very negative when the clues say ham
  double ln_spam = 0;  // Σ ln (1 - f): very negative when they say spam
  for (const Clue& clue : clues) {
    ln_ham += std::log(clue.f);
    ln_spam += std::log1p(-clue.f);
    result.clues.push_back(BayesClue{tokens[clue.index].text, clue.f});
  }
  const std::size_t dof = 2 * clues.size();
  const double spam_evidence = 1.0 - chi2_survival(-2.0 * ln_spam, dof);
  const double ham_evidence = 1.0 - chi2_survival(-2.0 * ln_ham, dof);
  result.probability = std::clamp((1.0 + spam_evidence - ham_evidence) / 2.0, 0.0, 1.0);
  return result;
}

Findings check_bayes(std::string_view content, const ParsedMessage& message, const BayesStore& store,
                     const BayesOptions& options) {
  Findings findings;
  if (store.spam_messages() < options.min_spam || store.ham_messages() < options.min_ham) return findings;
  const BayesResult result = bayes_classify(content, message, store);
  const BayesBucket* bucket = &kBayesBuckets.front();
  for (const BayesBucket& b : kBayesBuckets)
    if (result.probability >= b.from) bucket = &b;
  char head[160];
  std::snprintf(head, sizeof head, "p=%.4f, %zu clues of %zu tokens", result.probability, result.clues.size(),
                result.tokens);
  std::string detail = head;
  // The three strongest clues each way, for the log and the quarantine.
  auto list = [&](bool spammy, std::string_view label) {
    std::string part;
    std::size_t shown = 0;
    for (const BayesClue& clue : result.clues) {
      if ((clue.probability > 0.5) != spammy || shown == 3) continue;
      char f[16];
      std::snprintf(f, sizeof f, " %.3f", clue.probability);
      part += shown++ ? ", " : "";
      part += utf8_prefix(clue.token, 40);
      part += f;
    }
    if (!part.empty()) detail += "; " + std::string(label) + ": " + part;
  };
  list(true, "spam");
  list(false, "ham");
  findings.add(Category::spam, std::string(bucket->rule), bucket->score, std::move(detail));
  return findings;
}

}  // namespace mxgate::filter
