// SPF check_host() (RFC 7208); the contract is in spf.hpp.
//
// Layout: character helpers, the macro scanner (one function serves syntax
// checking and expansion), record parsing, then the Evaluation, which owns the
// per-check counters and performs the DNS lookups.
#include "sender_auth/spf.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <tuple>
#include <utility>

namespace mxgate::sender_auth {
namespace {

constexpr std::size_t kMaxNameLength = 253;  // presentation form without the final dot (7.3)
constexpr std::size_t kMaxLabelLength = 63;  // RFC 1035 section 2.3.4

// ------------------------------------------------------------ characters

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
char to_lower(char c) { return is_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowered(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    c = to_lower(c);
  }
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return to_lower(x) == to_lower(y); });
}

bool all_digits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), is_digit);
}

std::string printable(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

std::string_view strip_trailing_dot(std::string_view name) {
  if (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  return name;
}

// toplabel = ( *alphanum ALPHA *alphanum ) /
//            ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
bool is_toplabel(std::string_view label) {
  if (label.empty() || !is_alnum(label.front()) || !is_alnum(label.back())) {
    return false;
  }
  bool alpha = false;
  bool hyphen = false;
  for (char c : label) {
    if (c == '-') {
      hyphen = true;
    } else if (is_alpha(c)) {
      alpha = true;
    } else if (!is_digit(c)) {
      return false;
    }
  }
  return alpha || hyphen;
}

// A name a DNS query can be built from: labels of 1..63 octets, at most 253
// octets in all (no trailing dot).
bool is_query_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return false;
  }
  std::size_t label = 0;
  for (char c : name) {
    if (c == '.') {
      if (label == 0) {
        return false;
      }
      label = 0;
    } else if (++label > kMaxLabelLength) {
      return false;
    }
  }
  return label > 0;
}

// <domain> for check_host() (4.3): a valid multi-label name that is not an
// address literal.
bool is_checkable_domain(std::string_view name) {
  if (!is_query_name(name) || name.find('.') == std::string_view::npos || name.front() == '[') {
    return false;
  }
  asio::error_code ec;
  asio::ip::make_address(std::string(name), ec);
  return static_cast<bool>(ec);  // "192.0.2.1" is an address, not a domain
}

// The presentation form the Resolver (libunbound) parses: bytes other than
// [A-Za-z0-9_-] inside a label become \DDD.
std::string query_name(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    if (c == '.' || is_alnum(c) || c == '-' || c == '_') {
      out += c;
    } else {
      const auto u = static_cast<unsigned char>(c);
      out += '\\';
      out += static_cast<char>('0' + u / 100);
      out += static_cast<char>('0' + u / 10 % 10);
      out += static_cast<char>('0' + u % 10);
    }
  }
  return out;
}

asio::ip::address unmapped(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  }
  return address;
}

bool in_network(const asio::ip::address& client, const asio::ip::address& network, unsigned prefix) {
  if (client.is_v4() != network.is_v4()) {
    return false;
  }
  auto compare = [prefix](const auto& a, const auto& b) {
    const unsigned bits = std::min<unsigned>(prefix, static_cast<unsigned>(a.size() * 8));
    const unsigned whole = bits / 8;
    for (unsigned i = 0; i < whole; ++i) {
      if (a[i] != b[i]) {
        return false;
      }
    }
    if (bits % 8 == 0) {
      return true;
    }
    const auto mask = static_cast<unsigned char>(0xFF << (8 - bits % 8));
    return (a[whole] & mask) == (b[whole] & mask);
  };
  if (client.is_v4()) {
    return compare(client.to_v4().to_bytes(), network.to_v4().to_bytes());
  }
  return compare(client.to_v6().to_bytes(), network.to_v6().to_bytes());
}

// ------------------------------------------------------------ macros

enum class MacroMode {
  domain_spec,     // mechanism/redirect/exp arguments: no c, r, t
  modifier_value,  // unknown-modifier = name "=" macro-string: any letter
  explanation,     // explain-string: SP allowed, any letter
};

struct MacroExpand {
  char letter = 0;  // lower case; '%', '_', '-' for the escapes %% %_ %-
  bool url_escape = false;
  std::size_t keep = 0;  // rightmost parts to keep, 0 = all
  bool reverse = false;
  std::string delimiters;  // "" = "."
};

// Scans a macro-string: on_literal(char) for each literal, on_macro(const
// MacroExpand&) for each macro-expand.  Checks the syntax of 7.1.
template <class OnLiteral, class OnMacro>
Result<void> scan_macros(std::string_view text, MacroMode mode, OnLiteral on_literal, OnMacro on_macro) {
  static constexpr std::string_view kLetters = "slodiphcrtv";
  static constexpr std::string_view kDelimiters = ".-+,/_=";
  std::size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c != '%') {
      const auto u = static_cast<unsigned char>(c);
      if (!((u >= 0x21 && u <= 0x7e) || (u == 0x20 && mode == MacroMode::explanation))) {
        return make_error("character " + printable(std::string_view(&c, 1)) + " not allowed");
      }
      on_literal(c);
      ++i;
      continue;
    }
    if (i + 1 >= text.size()) {
      return make_error("'%' at the end");
    }
    const char next = text[i + 1];
    if (next == '%' || next == '_' || next == '-') {
      MacroExpand escape;
      escape.letter = next;
      on_macro(escape);
      i += 2;
      continue;
    }
    if (next != '{') {
      return make_error("'%' not followed by '{', '%', '_' or '-'");
    }
    std::size_t j = i + 2;
    if (j >= text.size() || kLetters.find(to_lower(text[j])) == std::string_view::npos) {
      return make_error("unknown macro letter in " + printable(text.substr(i, 4)));
    }
    MacroExpand macro;
    macro.letter = to_lower(text[j]);
    macro.url_escape = is_upper(text[j]);
    if (mode == MacroMode::domain_spec &&
        (macro.letter == 'c' || macro.letter == 'r' || macro.letter == 't')) {
      return make_error(std::string("%{") + text[j] + "} is only allowed in exp text");
    }
    ++j;
    bool digits = false;
    std::size_t keep = 0;
    while (j < text.size() && is_digit(text[j])) {
      digits = true;
      keep = std::min<std::size_t>(keep * 10 + static_cast<std::size_t>(text[j] - '0'), 1000);
      ++j;
    }
    if (digits && keep == 0) {
      return make_error("macro transformer 0");
    }
    macro.keep = keep;
    if (j < text.size() && (text[j] == 'r' || text[j] == 'R')) {
      macro.reverse = true;
      ++j;
    }
    while (j < text.size() && kDelimiters.find(text[j]) != std::string_view::npos) {
      macro.delimiters += text[j];
      ++j;
    }
    if (j >= text.size() || text[j] != '}') {
      return make_error("malformed macro " + printable(text.substr(i, j + 1 - i)));
    }
    on_macro(macro);
    i = j + 1;
  }
  return {};
}

// 32 nibbles, dotted, lower case (7.3: "1.0.b.c....").
std::string ip_dotted(const asio::ip::address& ip) {
  if (ip.is_v4()) {
    return ip.to_string();
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : ip.to_v6().to_bytes()) {
    if (!out.empty()) {
      out += '.';
    }
    out += kHex[b >> 4];
    out += '.';
    out += kHex[b & 15];
  }
  return out;
}

std::string macro_value(char letter, const SpfMacroContext& context) {
  switch (letter) {
    case 's':
      return context.sender;
    case 'l':
      return context.local_part;
    case 'o':
      return context.sender_domain;
    case 'd':
      return context.domain;
    case 'i':
      return ip_dotted(context.client);
    case 'p':
      return context.ptr_name;
    case 'h':
      return context.helo;
    case 'v':
      return context.client.is_v4() ? "in-addr" : "ip6";
    case 'c':
      return context.client.to_string();
    case 'r':
      return context.receiver;
    case 't':
      return std::to_string(context.timestamp);
    default:
      return {};
  }
}

std::string transform(const std::string& value, const MacroExpand& macro) {
  const std::string_view delimiters = macro.delimiters.empty() ? std::string_view(".") : macro.delimiters;
  std::vector<std::string_view> parts;
  std::string_view rest = value;
  for (;;) {  // one part per delimiter, plus one: bounded by value.size()
    const auto at = rest.find_first_of(delimiters);
    parts.push_back(rest.substr(0, at));
    if (at == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(at + 1);
  }
  if (macro.reverse) {
    std::reverse(parts.begin(), parts.end());
  }
  std::size_t first = 0;
  if (macro.keep != 0 && macro.keep < parts.size()) {
    first = parts.size() - macro.keep;
  }
  std::string out;
  for (std::size_t i = first; i < parts.size(); ++i) {
    if (i != first) {
      out += '.';
    }
    out += parts[i];
  }
  return out;
}

// RFC 3986 section 2.3 unreserved characters stay, everything else is %XX.
std::string url_escape(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    if (is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      const auto u = static_cast<unsigned char>(c);
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

Result<std::string> expand(std::string_view text, const SpfMacroContext& context, MacroMode mode) {
  std::string out;
  auto checked = scan_macros(
      text, mode, [&out](char c) { out += c; },
      [&out, &context](const MacroExpand& macro) {
        switch (macro.letter) {
          case '%':
            out += '%';
            return;
          case '_':
            out += ' ';
            return;
          case '-':
            out += "%20";
            return;
          default:
            break;
        }
        std::string value = transform(macro_value(macro.letter, context), macro);
        out += macro.url_escape ? url_escape(value) : value;
      });
  if (!checked) {
    return Error{checked.error()};
  }
  return out;
}

// domain-spec = macro-string domain-end
// domain-end  = ( "." toplabel [ "." ] ) / macro-expand
Result<void> check_domain_spec(std::string_view spec) {
  if (spec.empty()) {
    return make_error("empty domain-spec");
  }
  bool ends_with_macro = false;
  std::string tail;  // literal characters after the last macro-expand
  auto checked = scan_macros(
      spec, MacroMode::domain_spec,
      [&](char c) {
        ends_with_macro = false;
        tail += c;
      },
      [&](const MacroExpand&) {
        ends_with_macro = true;
        tail.clear();
      });
  if (!checked) {
    return checked;
  }
  if (ends_with_macro) {
    return {};
  }
  const std::string_view end = strip_trailing_dot(tail);
  const auto dot = end.rfind('.');
  if (dot == std::string_view::npos || !is_toplabel(end.substr(dot + 1))) {
    return make_error("domain-spec \"" + printable(spec) + "\" does not end in a top label or macro");
  }
  return {};
}

// ------------------------------------------------------------ record parsing

// "0" / %x31-39 0*N DIGIT, at most max.
bool parse_cidr(std::string_view digits, unsigned max, unsigned& value) {
  if (!all_digits(digits) || digits.size() > 3 || (digits.size() > 1 && digits[0] == '0')) {
    return false;
  }
  unsigned v = 0;
  for (char c : digits) {
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > max) {
    return false;
  }
  value = v;
  return true;
}

// ip4-network = qnum "." qnum "." qnum "." qnum (no leading zeros)
bool parse_ip4(std::string_view text, asio::ip::address& out) {
  std::array<unsigned char, 4> bytes{};
  std::string_view rest = text;
  for (std::size_t i = 0; i < 4; ++i) {
    const auto dot = rest.find('.');
    const std::string_view part = rest.substr(0, dot);
    unsigned value = 0;
    if (!parse_cidr(part, 255, value)) {  // same shape: 1-3 digits, no leading zero
      return false;
    }
    bytes[i] = static_cast<unsigned char>(value);
    if (i < 3) {
      if (dot == std::string_view::npos) {
        return false;
      }
      rest.remove_prefix(dot + 1);
    } else if (dot != std::string_view::npos) {
      return false;
    }
  }
  out = asio::ip::address_v4(bytes);
  return true;
}

// ip6-network = <RFC 4291 section 2.2 text> (no zone index)
bool parse_ip6(std::string_view text, asio::ip::address& out) {
  if (text.empty() || text.size() > 45 || !std::all_of(text.begin(), text.end(), [](char c) {
        return is_digit(c) || (to_lower(c) >= 'a' && to_lower(c) <= 'f') || c == ':' || c == '.';
      })) {
    return false;
  }
  asio::error_code ec;
  const auto address = asio::ip::make_address_v6(std::string(text), ec);
  if (ec) {
    return false;
  }
  out = address;
  return true;
}

Result<void> parse_directive(std::string_view term, SpfRecord& record) {
  SpfMechanism mechanism;
  mechanism.text = std::string(term);
  std::string_view rest = term;
  switch (rest.empty() ? '\0' : rest.front()) {
    case '+':
      mechanism.qualifier = SpfQualifier::pass;
      rest.remove_prefix(1);
      break;
    case '-':
      mechanism.qualifier = SpfQualifier::fail;
      rest.remove_prefix(1);
      break;
    case '~':
      mechanism.qualifier = SpfQualifier::softfail;
      rest.remove_prefix(1);
      break;
    case '?':
      mechanism.qualifier = SpfQualifier::neutral;
      rest.remove_prefix(1);
      break;
    default:
      break;
  }
  std::size_t name_end = 0;
  while (name_end < rest.size() && is_alnum(rest[name_end])) {
    ++name_end;
  }
  const std::string name = lowered(rest.substr(0, name_end));
  std::string_view args = rest.substr(name_end);
  auto bad = [&term](const std::string& why) { return make_error("\"" + printable(term) + "\": " + why); };
  // ":" domain-spec, required or optional.
  auto domain_argument = [&](bool required) -> Result<void> {
    if (args.empty()) {
      return required ? bad("needs \":domain\"") : Result<void>();
    }
    if (args.front() != ':') {
      return bad("unexpected \"" + printable(args) + "\"");
    }
    auto spec = check_domain_spec(args.substr(1));
    if (!spec) {
      return bad(spec.error());
    }
    mechanism.domain_spec = std::string(args.substr(1));
    return {};
  };

  if (name == "all") {
    mechanism.kind = SpfMechanismKind::all;
    if (!args.empty()) {
      return bad("all takes no argument");
    }
    record.has_all = true;
  } else if (name == "include" || name == "exists") {
    mechanism.kind = name == "include" ? SpfMechanismKind::include : SpfMechanismKind::exists;
    if (auto ok = domain_argument(true); !ok) {
      return ok;
    }
  } else if (name == "ptr") {
    mechanism.kind = SpfMechanismKind::ptr;
    if (auto ok = domain_argument(false); !ok) {
      return ok;
    }
  } else if (name == "a" || name == "mx") {
    mechanism.kind = name == "a" ? SpfMechanismKind::a : SpfMechanismKind::mx;
    // dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ], taken
    // from the end: a domain-spec cannot end in "/digits" anyway.
    auto slash = args.rfind('/');
    if (slash != std::string_view::npos && slash > 0 && args[slash - 1] == '/' &&
        all_digits(args.substr(slash + 1))) {
      if (!parse_cidr(args.substr(slash + 1), 128, mechanism.cidr6)) {
        return bad("bad IPv6 prefix length");
      }
      args = args.substr(0, slash - 1);
    }
    slash = args.rfind('/');
    if (slash != std::string_view::npos && all_digits(args.substr(slash + 1))) {
      if (!parse_cidr(args.substr(slash + 1), 32, mechanism.cidr4)) {
        return bad("bad IPv4 prefix length");
      }
      args = args.substr(0, slash);
    }
    if (auto ok = domain_argument(false); !ok) {
      return ok;
    }
  } else if (name == "ip4" || name == "ip6") {
    const bool v4 = name == "ip4";
    mechanism.kind = v4 ? SpfMechanismKind::ip4 : SpfMechanismKind::ip6;
    if (args.empty() || args.front() != ':') {
      return bad("needs \":network\"");
    }
    args.remove_prefix(1);
    const auto slash = args.find('/');
    const std::string_view network = args.substr(0, slash);
    if (!(v4 ? parse_ip4(network, mechanism.network) : parse_ip6(network, mechanism.network))) {
      return bad(v4 ? "not an IPv4 address" : "not an IPv6 address");
    }
    if (slash != std::string_view::npos) {
      unsigned& length = v4 ? mechanism.cidr4 : mechanism.cidr6;
      if (!parse_cidr(args.substr(slash + 1), v4 ? 32 : 128, length)) {
        return bad(v4 ? "bad IPv4 prefix length" : "bad IPv6 prefix length");
      }
    }
  } else {
    return bad("unknown mechanism");
  }
  record.mechanisms.push_back(std::move(mechanism));
  return {};
}

Result<void> parse_term(std::string_view term, SpfRecord& record) {
  // modifier = name "=" ..., name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
  std::size_t name_end = 0;
  if (!term.empty() && is_alpha(term.front())) {
    name_end = 1;
    while (name_end < term.size() && (is_alnum(term[name_end]) || term[name_end] == '-' ||
                                      term[name_end] == '_' || term[name_end] == '.')) {
      ++name_end;
    }
  }
  if (name_end == 0 || name_end >= term.size() || term[name_end] != '=') {
    return parse_directive(term, record);
  }
  const std::string_view name = term.substr(0, name_end);
  const std::string_view value = term.substr(name_end + 1);
  auto bad = [&term](const std::string& why) { return make_error("\"" + printable(term) + "\": " + why); };
  if (iequals(name, "redirect") || iequals(name, "exp")) {
    std::optional<std::string>& slot = iequals(name, "redirect") ? record.redirect : record.explanation;
    if (slot) {
      return bad(lowered(name) + "= appears twice");
    }
    if (auto spec = check_domain_spec(value); !spec) {
      return bad(spec.error());
    }
    slot = std::string(value);
    return {};
  }
  // Unknown modifiers are ignored (6), but must be macro-strings.
  auto checked = scan_macros(
      value, MacroMode::modifier_value, [](char) {}, [](const MacroExpand&) {});
  if (!checked) {
    return bad(checked.error());
  }
  return {};
}

// ------------------------------------------------------------ evaluation

SpfResult result_of(SpfQualifier qualifier) {
  switch (qualifier) {
    case SpfQualifier::pass:
      return SpfResult::pass;
    case SpfQualifier::fail:
      return SpfResult::fail;
    case SpfQualifier::softfail:
      return SpfResult::softfail;
    case SpfQualifier::neutral:
      return SpfResult::neutral;
  }
  return SpfResult::neutral;
}

struct Outcome {
  SpfResult result = SpfResult::neutral;
  std::string mechanism;
  std::string reason;
  std::string explanation;
};

// Coroutine frames stay small: GCC 12 gives a false -Wmismatched-new-delete
// on frames larger than Asio's frame recycling serves (see
// filter/clamd_client.cpp), so bulky state lives on the heap: an Outcome
// only travels as a pointer until the end, a record's state in RecordState.
using OutcomePtr = std::unique_ptr<Outcome>;

OutcomePtr outcome(SpfResult result, std::string mechanism, std::string reason) {
  return std::make_unique<Outcome>(Outcome{result, std::move(mechanism), std::move(reason), {}});
}

enum class MatchKind { no_match, match, error };

struct Match {
  MatchKind kind = MatchKind::no_match;
  OutcomePtr error;  // kind == error
};

Match matched(bool yes) { return Match{yes ? MatchKind::match : MatchKind::no_match, nullptr}; }
Match failed(OutcomePtr error) { return Match{MatchKind::error, std::move(error)}; }

// A mechanism's target name after expansion; nullopt when it is not a name
// a query can be built from (the mechanism then does not match).
struct Target {
  std::optional<std::string> name;
};

// One record being evaluated.
struct RecordState {
  std::string domain;
  SpfRecord record;
  SpfMacroContext context;
  Outcome result;
};

class Evaluation {
 public:
  Evaluation(dns::Resolver& resolver, const SpfLimits& limits, SpfMacroContext context)
      : resolver_(resolver), limits_(limits), context_(std::move(context)) {}

  unsigned dns_terms() const { return dns_terms_; }
  unsigned void_lookups() const { return void_lookups_; }

  // check_host() on one domain; explain: evaluate exp= on fail (top level
  // and redirect targets, never include targets).
  asio::awaitable<Outcome> evaluate(std::string domain, unsigned depth, bool explain) {
    if (depth > kMaxSpfRecursion) {
      co_return Outcome{SpfResult::permerror,
                        "",
                        "include/redirect nested deeper than " + std::to_string(kMaxSpfRecursion),
                        {}};
    }
    auto state = std::make_unique<RecordState>();
    state->domain = std::move(domain);
    asio::awaitable<OutcomePtr> load = load_record(*state);
    OutcomePtr failure = co_await std::move(load);
    if (failure) {
      co_return std::move(*failure);
    }
    state->context = context_;
    state->context.domain = state->domain;
    for (const SpfMechanism& mechanism : state->record.mechanisms) {
      asio::awaitable<Match> step = match(mechanism, state->context, depth);
      Match m = co_await std::move(step);
      if (m.kind == MatchKind::error) {
        co_return std::move(*m.error);
      }
      if (m.kind == MatchKind::match) {
        state->result = Outcome{result_of(mechanism.qualifier),
                                mechanism.text,
                                state->domain + ": " + mechanism.text + " matched",
                                {}};
        if (state->result.result == SpfResult::fail && explain && state->record.explanation) {
          asio::awaitable<std::string> text = explanation(*state->record.explanation, state->context);
          state->result.explanation = co_await std::move(text);
        }
        co_return std::move(state->result);
      }
    }
    if (state->record.redirect && !state->record.has_all) {
      asio::awaitable<OutcomePtr> redirect = follow_redirect(*state, depth, explain);
      OutcomePtr out = co_await std::move(redirect);
      co_return std::move(*out);
    }
    co_return Outcome{SpfResult::neutral, "default", state->domain + ": no mechanism matched", {}};
  }

 private:
  OutcomePtr count_dns_term(const std::string& term) {
    if (++dns_terms_ > limits_.max_dns_mechanisms) {
      return outcome(SpfResult::permerror, term,
                     "more than " + std::to_string(limits_.max_dns_mechanisms) + " DNS-querying terms (at " +
                         term + ")");
    }
    return nullptr;
  }

  // A NXDOMAIN or NODATA answer; permerror once past the limit.
  OutcomePtr count_void(const std::string& term, const std::string& what) {
    if (++void_lookups_ > limits_.max_void_lookups) {
      return outcome(
          SpfResult::permerror, term,
          "more than " + std::to_string(limits_.max_void_lookups) + " void lookups (at " + what + ")");
    }
    return nullptr;
  }

  static Result<Target> target_name(const std::string& spec, const SpfMacroContext& context) {
    if (spec.empty()) {
      return Target{context.domain};
    }
    auto expanded = expand_spf_domain_spec(spec, context);
    if (!expanded) {
      return Error{expanded.error()};
    }
    if (!is_query_name(expanded.value())) {
      return Target{std::nullopt};
    }
    return Target{std::move(expanded.value())};
  }

  // Fetches and parses state.domain's SPF record into state.record; the
  // none/temperror/permerror outcome when there is no usable one.
  asio::awaitable<OutcomePtr> load_record(RecordState& state) {
    const std::string& domain = state.domain;
    if (!is_checkable_domain(domain)) {
      co_return outcome(SpfResult::none, "", "\"" + printable(domain) + "\" is not a domain SPF can check");
    }
    asio::awaitable<dns::Answer<std::string>> lookup = resolver_.txt(query_name(domain));
    dns::Answer<std::string> answer = co_await std::move(lookup);
    switch (answer.status) {
      case dns::Status::failure:
        co_return outcome(SpfResult::temperror, "", "DNS failure for TXT " + domain + ": " + answer.reason);
      case dns::Status::nxdomain:
      case dns::Status::nodata:
        if (OutcomePtr over = count_void("", "TXT " + domain)) {
          co_return over;
        }
        co_return outcome(SpfResult::none, "",
                          answer.status == dns::Status::nxdomain ? domain + " does not exist"
                                                                 : "no SPF record at " + domain);
      case dns::Status::ok:
        break;
    }
    const std::string* spf = nullptr;
    std::size_t count = 0;
    for (const std::string& txt : answer.records) {
      if (is_spf_record(txt)) {
        spf = &txt;
        ++count;
      }
    }
    if (count == 0) {
      co_return outcome(SpfResult::none, "", "no SPF record at " + domain);
    }
    if (count > 1) {
      co_return outcome(SpfResult::permerror, "", std::to_string(count) + " SPF records at " + domain);
    }
    auto parsed = parse_spf_record(*spf);
    if (!parsed) {
      co_return outcome(SpfResult::permerror, "", domain + ": " + parsed.error());
    }
    state.record = std::move(parsed.value());
    co_return nullptr;
  }

  // redirect= (6.1): the target's result, permerror when it has no record.
  asio::awaitable<OutcomePtr> follow_redirect(RecordState& state, unsigned depth, bool explain) {
    const std::string term = "redirect=" + *state.record.redirect;
    if (OutcomePtr over = count_dns_term(term)) {
      co_return over;
    }
    auto target = target_name(*state.record.redirect, state.context);
    if (!target) {
      co_return outcome(SpfResult::permerror, term, state.domain + ": " + term + ": " + target.error());
    }
    if (!target->name) {
      co_return outcome(SpfResult::permerror, term, state.domain + ": " + term + ": not a valid domain name");
    }
    asio::awaitable<Outcome> next = evaluate(*target->name, depth + 1, explain);
    Outcome out = co_await std::move(next);
    if (out.result == SpfResult::none) {
      co_return outcome(SpfResult::permerror, term, state.domain + ": " + term + ": " + out.reason);
    }
    co_return std::make_unique<Outcome>(std::move(out));
  }

  // Addresses of host of the client's family (A only for exists); a void
  // lookup when there are none.  error is set on temperror/permerror.
  asio::awaitable<std::vector<asio::ip::address>> host_addresses(std::string host, const std::string& term,
                                                                 bool a_only, OutcomePtr& error) {
    std::vector<asio::ip::address> out;
    asio::awaitable<dns::Answer<asio::ip::address>> lookup = resolver_.addresses(query_name(host));
    dns::Answer<asio::ip::address> answer = co_await std::move(lookup);
    if (answer.status == dns::Status::failure) {
      error = outcome(SpfResult::temperror, term, "DNS failure for " + host + ": " + answer.reason);
      co_return out;
    }
    const bool want_v4 = a_only || context_.client.is_v4();
    for (const auto& address : answer.records) {
      if (address.is_v4() == want_v4) {
        out.push_back(address);
      }
    }
    if (out.empty()) {
      error = count_void(term, std::string(want_v4 ? "A " : "AAAA ") + host);
    }
    co_return out;
  }

  asio::awaitable<Match> include(const SpfMechanism& mechanism, const SpfMacroContext& context,
                                 std::string name, unsigned depth) {
    asio::awaitable<Outcome> nested = evaluate(std::move(name), depth + 1, false);
    Outcome result = co_await std::move(nested);
    auto inner = std::make_unique<Outcome>(std::move(result));
    switch (inner->result) {
      case SpfResult::pass:
        co_return matched(true);
      case SpfResult::fail:
      case SpfResult::softfail:
      case SpfResult::neutral:
        co_return matched(false);
      case SpfResult::none:
        co_return failed(outcome(SpfResult::permerror, mechanism.text,
                                 context.domain + ": " + mechanism.text + ": " + inner->reason));
      case SpfResult::temperror:
      case SpfResult::permerror:
        break;
    }
    if (inner->mechanism.empty()) {
      inner->mechanism = mechanism.text;
    }
    co_return failed(std::move(inner));
  }

  asio::awaitable<Match> mx(const SpfMechanism& mechanism, std::string name, unsigned prefix) {
    asio::awaitable<dns::Answer<dns::MxRecord>> lookup = resolver_.mx(query_name(name));
    dns::Answer<dns::MxRecord> answer = co_await std::move(lookup);
    if (answer.status == dns::Status::failure) {
      co_return failed(
          outcome(SpfResult::temperror, mechanism.text, "DNS failure for MX " + name + ": " + answer.reason));
    }
    if (answer.records.empty()) {
      if (OutcomePtr over = count_void(mechanism.text, "MX " + name)) {
        co_return failed(std::move(over));
      }
      co_return matched(false);
    }
    if (answer.records.size() > limits_.max_mx_names) {
      co_return failed(outcome(SpfResult::permerror, mechanism.text,
                               name + " has " + std::to_string(answer.records.size()) +
                                   " MX records, more than " + std::to_string(limits_.max_mx_names)));
    }
    std::sort(answer.records.begin(), answer.records.end(),
              [](const dns::MxRecord& x, const dns::MxRecord& y) {
                return std::tie(x.preference, x.host) < std::tie(y.preference, y.host);
              });
    bool any = false;
    OutcomePtr error;
    for (const dns::MxRecord& host : answer.records) {  // at most max_mx_names
      if (host.host.empty()) {
        continue;  // null MX (RFC 7505): nothing to look up
      }
      asio::awaitable<std::vector<asio::ip::address>> host_lookup =
          host_addresses(host.host, mechanism.text, false, error);
      std::vector<asio::ip::address> addresses = co_await std::move(host_lookup);
      if (error) {
        co_return failed(std::move(error));
      }
      any = any || std::any_of(addresses.begin(), addresses.end(), [&](const auto& address) {
              return in_network(context_.client, address, prefix);
            });
    }
    co_return matched(any);
  }

  asio::awaitable<Match> match(const SpfMechanism& mechanism, const SpfMacroContext& context,
                               unsigned depth) {
    const asio::ip::address& client = context_.client;
    switch (mechanism.kind) {
      case SpfMechanismKind::all:
        co_return matched(true);
      case SpfMechanismKind::ip4:
        co_return matched(in_network(client, mechanism.network, mechanism.cidr4));
      case SpfMechanismKind::ip6:
        co_return matched(in_network(client, mechanism.network, mechanism.cidr6));
      default:
        break;
    }
    if (OutcomePtr over = count_dns_term(mechanism.text)) {
      co_return failed(std::move(over));
    }
    auto target = target_name(mechanism.domain_spec, context);
    if (!target) {
      co_return failed(outcome(SpfResult::permerror, mechanism.text,
                               context.domain + ": " + mechanism.text + ": " + target.error()));
    }
    if (!target->name) {
      if (mechanism.kind == SpfMechanismKind::include) {
        co_return failed(outcome(SpfResult::permerror, mechanism.text,
                                 context.domain + ": " + mechanism.text + ": not a valid domain name"));
      }
      co_return matched(false);
    }
    const unsigned prefix = client.is_v4() ? mechanism.cidr4 : mechanism.cidr6;
    switch (mechanism.kind) {
      case SpfMechanismKind::include: {
        asio::awaitable<Match> nested = include(mechanism, context, std::move(*target->name), depth);
        co_return co_await std::move(nested);
      }
      case SpfMechanismKind::mx: {
        asio::awaitable<Match> nested = mx(mechanism, std::move(*target->name), prefix);
        co_return co_await std::move(nested);
      }
      case SpfMechanismKind::a:
      case SpfMechanismKind::exists: {
        const bool exists = mechanism.kind == SpfMechanismKind::exists;
        OutcomePtr error;
        asio::awaitable<std::vector<asio::ip::address>> lookup =
            host_addresses(std::move(*target->name), mechanism.text, exists, error);
        std::vector<asio::ip::address> addresses = co_await std::move(lookup);
        if (error) {
          co_return failed(std::move(error));
        }
        co_return matched(exists ? !addresses.empty()
                                 : std::any_of(addresses.begin(), addresses.end(), [&](const auto& address) {
                                     return in_network(client, address, prefix);
                                   }));
      }
      case SpfMechanismKind::ptr:  // parsed, counted, never matches: see spf.hpp
      default:
        co_return matched(false);
    }
  }

  // exp= (6.2): "" whenever anything is wrong with it.
  asio::awaitable<std::string> explanation(const std::string& spec, const SpfMacroContext& context) {
    auto target = target_name(spec, context);
    if (!target || !target->name) {
      co_return std::string();
    }
    asio::awaitable<dns::Answer<std::string>> lookup = resolver_.txt(query_name(*target->name));
    dns::Answer<std::string> answer = co_await std::move(lookup);
    if (answer.status != dns::Status::ok || answer.records.size() != 1) {
      co_return std::string();
    }
    auto text = expand_spf_macros(answer.records.front(), context, SpfMacroUse::explanation);
    co_return text ? std::move(text.value()) : std::string();
  }

  dns::Resolver& resolver_;
  SpfLimits limits_;
  SpfMacroContext context_;  // without d, which each record sets
  unsigned dns_terms_ = 0;
  unsigned void_lookups_ = 0;
};

SpfMacroContext macro_context(const SpfRequest& request, const std::string& domain) {
  SpfMacroContext context;
  context.sender = request.sender;
  const auto at = request.sender.rfind('@');
  context.local_part = at == std::string::npos ? std::string("postmaster") : request.sender.substr(0, at);
  context.sender_domain = at == std::string::npos ? domain : request.sender.substr(at + 1);
  context.client = unmapped(request.client);
  context.helo = request.helo;
  context.receiver = request.receiver;
  context.timestamp = request.timestamp;
  return context;
}

SpfVerdict not_checked(std::string domain, std::string reason) {
  SpfVerdict verdict;
  verdict.result = SpfResult::none;
  verdict.domain = std::move(domain);
  verdict.reason = std::move(reason);
  return verdict;
}

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string_view to_string(SpfResult result) {
  switch (result) {
    case SpfResult::none:
      return "none";
    case SpfResult::neutral:
      return "neutral";
    case SpfResult::pass:
      return "pass";
    case SpfResult::fail:
      return "fail";
    case SpfResult::softfail:
      return "softfail";
    case SpfResult::temperror:
      return "temperror";
    case SpfResult::permerror:
      return "permerror";
  }
  return "permerror";
}

bool is_spf_record(std::string_view txt) {
  constexpr std::string_view kVersion = "v=spf1";
  return txt.size() >= kVersion.size() && iequals(txt.substr(0, kVersion.size()), kVersion) &&
         (txt.size() == kVersion.size() || txt[kVersion.size()] == ' ');
}

Result<SpfRecord> parse_spf_record(std::string_view txt) {
  if (!is_spf_record(txt)) {
    return make_error("not an SPF record (no \"v=spf1\")");
  }
  SpfRecord record;
  std::string_view rest = txt.substr(6);
  while (!rest.empty()) {  // each pass consumes at least one character
    if (rest.front() == ' ') {
      rest.remove_prefix(1);
      continue;
    }
    const auto space = rest.find(' ');
    const std::string_view term = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view() : rest.substr(space);
    if (auto parsed = parse_term(term, record); !parsed) {
      return Error{"syntax error: " + parsed.error()};
    }
  }
  return record;
}

Result<std::string> expand_spf_macros(std::string_view text, const SpfMacroContext& context,
                                      SpfMacroUse use) {
  return expand(text, context,
                use == SpfMacroUse::explanation ? MacroMode::explanation : MacroMode::domain_spec);
}

Result<std::string> expand_spf_domain_spec(std::string_view domain_spec, const SpfMacroContext& context) {
  auto expanded = expand(domain_spec, context, MacroMode::domain_spec);
  if (!expanded) {
    return expanded;
  }
  std::string name(strip_trailing_dot(expanded.value()));
  while (name.size() > kMaxNameLength) {  // each pass removes a label
    const auto dot = name.find('.');
    if (dot == std::string::npos) {
      break;  // one label longer than a name: is_query_name() refuses it
    }
    name.erase(0, dot + 1);
  }
  return name;
}

asio::awaitable<SpfVerdict> check_host(dns::Resolver& resolver, SpfRequest request) {
  auto verdict = std::make_unique<SpfVerdict>();
  verdict->domain = strip_trailing_dot(request.domain);
  if (!is_checkable_domain(verdict->domain)) {
    verdict->reason = "\"" + printable(verdict->domain) + "\" is not a domain SPF can check";
    co_return std::move(*verdict);
  }
  auto evaluation =
      std::make_unique<Evaluation>(resolver, request.limits, macro_context(request, verdict->domain));
  try {
    asio::awaitable<Outcome> run = evaluation->evaluate(verdict->domain, 0, true);
    Outcome outcome = co_await std::move(run);
    verdict->result = outcome.result;
    verdict->mechanism = std::move(outcome.mechanism);
    // Both may carry bytes from the sender or its DNS: printable ASCII only.
    verdict->reason = printable(outcome.reason);
    verdict->explanation = printable(outcome.explanation);
  } catch (const std::exception& e) {
    verdict->result = SpfResult::temperror;
    verdict->reason = std::string("internal error: ") + e.what();
  }
  verdict->dns_lookups = evaluation->dns_terms();
  verdict->void_lookups = evaluation->void_lookups();
  co_return std::move(*verdict);
}

asio::awaitable<SpfVerdict> check_spf_mail_from(dns::Resolver& resolver, asio::ip::address client,
                                                std::string helo, std::string sender, SpfLimits limits) {
  if (sender.size() >= 2 && sender.front() == '<' && sender.back() == '>') {
    sender = sender.substr(1, sender.size() - 2);
  }
  SpfRequest request;
  request.client = client;
  request.helo = std::string(strip_trailing_dot(helo));
  request.limits = limits;
  request.timestamp = now_seconds();
  if (sender.empty()) {  // null reverse-path: postmaster@HELO (2.4)
    request.domain = std::string(strip_trailing_dot(helo));
    request.sender = "postmaster@" + request.domain;
  } else {
    const auto at = sender.rfind('@');
    std::string local = at == std::string::npos ? std::string() : sender.substr(0, at);
    request.domain =
        std::string(strip_trailing_dot(at == std::string::npos ? sender : sender.substr(at + 1)));
    if (local.empty()) {  // no local-part: "postmaster" (4.3)
      local = "postmaster";
    }
    request.sender = local + "@" + request.domain;
  }
  asio::awaitable<SpfVerdict> run = check_host(resolver, std::move(request));
  co_return co_await std::move(run);
}

asio::awaitable<SpfVerdict> check_spf_helo(dns::Resolver& resolver, asio::ip::address client,
                                           std::string helo, SpfLimits limits) {
  const std::string domain(strip_trailing_dot(helo));
  if (!is_checkable_domain(domain)) {
    co_return not_checked(domain, "HELO \"" + printable(helo) + "\" is not a domain name: not checked");
  }
  SpfRequest request;
  request.client = client;
  request.domain = domain;
  request.sender = "postmaster@" + domain;
  request.helo = domain;
  request.limits = limits;
  request.timestamp = now_seconds();
  asio::awaitable<SpfVerdict> run = check_host(resolver, std::move(request));
  co_return co_await std::move(run);
}

}  // namespace mxgate::sender_auth
